#!/bin/bash
# session 13, call 1: rwkv6 and retnet against fla with rounded() at fla's rounding points
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sf $R/specs specs && ln -sf $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; echo $C > /tmp/r/commit.txt; date -u > /tmp/r/date.txt
pack() { (cd /tmp/r && tar czf $OUT/r.tgz --exclude='*.pt' --exclude='*.safetensors' . 2>/dev/null); }
t0=$(date +%s)
timeout 200 python3 bench/oracle.py --out /tmp/r/rwkv6 --no-time --first-config --specs rwkv6 --control fused_recurrent > /tmp/r/rwkv6.log 2>&1; echo "rwkv6 rc=$? $(( $(date +%s) - t0 ))s" >> /tmp/r/times.txt; pack
timeout 200 python3 bench/oracle.py --out /tmp/r/retnet --no-time --first-config --specs retnet > /tmp/r/retnet.log 2>&1; echo "retnet rc=$? $(( $(date +%s) - t0 ))s" >> /tmp/r/times.txt; pack
cat /tmp/r/times.txt; for s in rwkv6 retnet; do sed -n 5,12p /tmp/r/$s/results.md; tail -3 /tmp/r/$s.log; done
