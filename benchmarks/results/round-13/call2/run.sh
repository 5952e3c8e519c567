#!/bin/bash
# session 13, call 2: zoo timing rows of rwkv6 and retnet (B 8 x T 512, bf16), warm-ups side by side, timings alone
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w /tmp/q && cd /tmp/w && ln -sf $R/specs specs && ln -sf $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; echo $C > /tmp/r/commit.txt; date -u > /tmp/r/date.txt
pack() { (cd /tmp/r && tar czf $OUT/r.tgz --exclude='*.pt' --exclude='*.safetensors' . 2>/dev/null); }
t0=$(date +%s)
for s in rwkv6 retnet; do
  (timeout 520 python3 bench/oracle.py --out /tmp/r/time-$s --specs $s --time-only --time-queue /tmp/q --time-peers 2 --time-wait 420 > /tmp/r/time-$s.log 2>&1; echo "$s rc=$? $(( $(date +%s) - t0 ))s" >> /tmp/r/times.txt) &
done
wait; pack
cat /tmp/r/times.txt; for s in rwkv6 retnet; do tail -4 /tmp/r/time-$s/results.md; tail -2 /tmp/r/time-$s.log; done
