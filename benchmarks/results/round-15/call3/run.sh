#!/bin/bash
# session 15, call 3 (4 GPUs): archdsl bench at 100M, four lanes at once, each model eager and with CUDA graphs
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r4 /tmp/w && cd /tmp/w && ln -sfn $R/specs specs && mkdir -p bench && cp $R/benchmarks/*.py bench/
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r4/device.txt; python3 -c "import torch,triton,fla,mamba_ssm;print(torch.__version__, triton.__version__, fla.__version__, mamba_ssm.__version__)" >> /tmp/r4/device.txt 2>&1
echo $C > /tmp/r4/commit.txt; date -u > /tmp/r4/date.txt
( while sleep 30; do (cd /tmp/r4 && tar czf $OUT/r4.tgz --exclude='*.pt' --exclude='*.safetensors' . 2>/dev/null); done ) & P=$!
timeout 570 python3 bench/bench_lanes.py --out /tmp/r4/bench --gpus 4 --models E88_d12h32 fla-gdn mamba2 gdn -- \
  --params 100M --align 128 --minutes 0.5 --backend triton --modes eager,cudagraphs --timeout 270 \
  --data $R/.data/corpus-train-1.txt.xz --val $R/.data/corpus-val.txt.xz > /tmp/r4/lanes.log 2>&1; echo "rc=$?" >> /tmp/r4/lanes.log
kill $P; date -u >> /tmp/r4/date.txt; (cd /tmp/r4 && tar czf $OUT/r4.tgz --exclude='*.pt' --exclude='*.safetensors' . 2>/dev/null)
tail -5 /tmp/r4/lanes.log; cat /tmp/r4/bench/results.md 2>/dev/null | tail -14
