#!/bin/bash
# session 23, call 3 (one GPU): generate at 100M, eager against CUDA graphs, fp32 and bf16 autocast;
# where an fp32 gdn decode step spends its GPU time
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s23c
mkdir -p $D /tmp/w23c && cd /tmp/w23c && ln -sfn $R/specs specs && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
echo "$C" > $D/commit.txt; date -u > $D/date.txt
( while sleep 20; do pack; done ) & P=$!
stamp "generate"; timeout 420 python3 bench/generate_speed.py --models e88:E88_d12h32 gdn:GDN_100m specs/mamba2.rnn:Mamba2_100m --bytes 256 > $D/generate.md 2> $D/generate.log; stamp "generate rc=$?"; pack
stamp "step kernels skipped"
kill $P; pack
cat $D/times.txt; cat $D/generate.md; tail -3 $D/generate.log; grep "GPU ms a step" $D/step-kernels.txt
