#!/bin/bash
# session 14, call 1: retnet against fla (agreement fp32 + bf16, then time) with the split scores
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w /tmp/q && cd /tmp/w && ln -sf $R/specs specs && ln -sf $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; echo $C > /tmp/r/commit.txt; date -u > /tmp/r/date.txt
pack() { (cd /tmp/r && tar czf $OUT/r.tgz --exclude='*.pt' --exclude='*.safetensors' . 2>/dev/null); }
t0=$(date +%s)
timeout 220 python3 bench/oracle.py --out /tmp/r/retnet --no-time --first-config --specs retnet > /tmp/r/retnet.log 2>&1; echo "retnet rc=$? $(( $(date +%s) - t0 ))s" >> /tmp/r/times.txt; pack
timeout 300 python3 bench/oracle.py --out /tmp/r/time-retnet --specs retnet --time-only > /tmp/r/time-retnet.log 2>&1; echo "time rc=$? $(( $(date +%s) - t0 ))s" >> /tmp/r/times.txt; pack
cat /tmp/r/times.txt; sed -n 5,12p /tmp/r/retnet/results.md; tail -3 /tmp/r/retnet.log; tail -4 /tmp/r/time-retnet/results.md; tail -2 /tmp/r/time-retnet.log
