#!/bin/bash
# session 15, call 4 (4 GPUs): archdsl bench at 100M, each model in its best step mode of call 3; gdn.rnn with CUDA graphs after the fix
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r5 /tmp/w && cd /tmp/w && ln -sfn $R/specs specs && mkdir -p bench && cp $R/benchmarks/*.py bench/
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r5/device.txt; python3 -c "import torch,triton,fla,mamba_ssm;print(torch.__version__, triton.__version__, fla.__version__, mamba_ssm.__version__)" >> /tmp/r5/device.txt 2>&1
echo $C > /tmp/r5/commit.txt; date -u > /tmp/r5/date.txt
( while sleep 30; do (cd /tmp/r5 && tar czf $OUT/r5.tgz --exclude='*.pt' --exclude='*.safetensors' . 2>/dev/null); done ) & P=$!
timeout 570 python3 bench/bench_lanes.py --out /tmp/r5/bench --gpus 4 --models E88_d12h32 fla-gdn mamba2 gdn --modes-for fla-gdn=eager -- \
  --params 100M --align 128 --minutes 0.5 --backend triton --modes cudagraphs --timeout 270 \
  --data $R/.data/corpus-train-1.txt.xz --val $R/.data/corpus-val.txt.xz > /tmp/r5/lanes.log 2>&1; echo "rc=$?" >> /tmp/r5/lanes.log
kill $P; date -u >> /tmp/r5/date.txt; (cd /tmp/r5 && tar czf $OUT/r5.tgz --exclude='*.pt' --exclude='*.safetensors' . 2>/dev/null)
tail -5 /tmp/r5/lanes.log; cat /tmp/r5/bench/results.md 2>/dev/null | tail -14
