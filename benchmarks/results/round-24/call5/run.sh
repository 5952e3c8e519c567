#!/bin/bash
# session 24, call 5 (one GPU): loop_ab at checkpoint stride 1, then at stride 16 with fla's chunked
# GDN (wall time and each side's GPU time), then archdsl bench E88_d12h32 at 100M with --keep-states
# and without, under CUDA graphs, one after the other
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s24e
mkdir -p $D /tmp/w24e && cd /tmp/w24e && ln -sfn $R/specs specs && ln -sfn $R/tests tests && ln -sfn $R/benchmarks benchmarks
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz --exclude='*.pt' --exclude='*.safetensors' --exclude='*.ckpt' --exclude='*.png' . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
echo "$C" > $D/commit.txt; date -u > $D/date.txt
stamp "stride 1"; timeout 110 python3 benchmarks/loop_ab.py --label "stride 1 ($C)" --chunk 1 --out $D/stride1.md > $D/stride1.log 2>&1; stamp "stride 1 rc=$?"; pack
stamp "stride 16 + fla"; timeout 230 python3 benchmarks/loop_ab.py --label "stride 16 ($C)" --chunk 16 --fla --out $D/stride16.md > $D/stride16.log 2>&1; stamp "stride 16 rc=$?"; pack
( while sleep 20; do pack; done ) & P=$!
stamp "bench"; timeout 250 python3 -m archdsl.cli bench E88_d12h32:keep_states=true E88_d12h32 --params 100M --align 128 --minutes 0.5 --backend triton --modes cudagraphs --timeout 125 \
    --data $R/.data/corpus-train-1.txt.xz --val $R/.data/corpus-val.txt.xz --out $D/bench > $D/bench.log 2>&1; stamp "bench rc=$?"
kill $P; pack
cat $D/times.txt; cat $D/stride1.md $D/stride16.md; grep "^| E88" $D/bench/results.md | head -4
