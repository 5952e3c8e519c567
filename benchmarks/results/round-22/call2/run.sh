#!/bin/bash
# session 22, call 2 (one GPU): archdsl bench at 100M on the team corpus, one lane after another on one
# GPU: gdn.rnn with --products half and at the default tf32 (CUDA graphs, the best mode of
# bench-lanes-100M-2), fla-gdn (eager, its best there), 0.5 timed minutes each
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/r22b
mkdir -p $D /tmp/w22b && cd /tmp/w22b && ln -sfn $R/specs specs && mkdir -p bench && cp $R/benchmarks/*.py bench/
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
pack() { (cd $D && tar czf $OUT/r.tgz --exclude='*.pt' --exclude='*.safetensors' --exclude='*.ckpt' . 2>/dev/null); }
( while sleep 30; do pack; done ) & P=$!
timeout 540 python3 bench/bench_lanes.py --out $D/bench --gpus 1 --models gdn:products=half gdn fla-gdn --modes-for fla-gdn=eager -- \
  --params 100M --align 128 --minutes 0.5 --backend triton --modes cudagraphs --timeout 300 \
  --data $R/.data/corpus-train-1.txt.xz --val $R/.data/corpus-val.txt.xz > $D/lanes.log 2>&1; echo "rc=$?" >> $D/lanes.log
kill $P; date -u >> $D/date.txt; pack
tail -5 $D/lanes.log; cat $D/bench/results.md 2>/dev/null | tail -14
