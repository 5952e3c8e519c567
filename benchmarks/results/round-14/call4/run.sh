#!/bin/bash
# session 14, call 4 (H100, warm machine): the four slowest cold specs of call 3, one at a time
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r2 /tmp/w && cd /tmp/w && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r2/device.txt; echo $C > /tmp/r2/commit.txt; date -u > /tmp/r2/date.txt
pack() { (cd /tmp/r2 && tar czf $OUT/r2.tgz . 2>/dev/null); }
t0=$(date +%s)
timeout 300 python3 bench/compile_times.py --out /tmp/r2/ct --lanes 1 --timeout 80 --commit $C --specs gated_deltaproduct,rwkv6,kda,rwkv7 > /tmp/r2/ct.log 2>&1; echo "ct rc=$? $(( $(date +%s) - t0 ))s" >> /tmp/r2/times.txt; pack
cat /tmp/r2/times.txt; tail -6 /tmp/r2/ct/results.md
