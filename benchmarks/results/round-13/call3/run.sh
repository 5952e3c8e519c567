#!/bin/bash
# session 13, call 3: rwkv6 whole layer (B 8 x T 512, bf16 autocast), spec before/after rounded(), recomputation on/off
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sf $R/specs specs && mkdir -p bench && cp $R/benchmarks/*.py bench/
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; echo $C > /tmp/r/commit.txt; date -u > /tmp/r/date.txt
pack() { (cd /tmp/r && tar czf $OUT/r.tgz . 2>/dev/null); }
for rc in 1 0 1 0; do
  for s in "$R/specs/rwkv6.rnn new" "$R/.gpu_main/rwkv6_old.rnn old"; do
    set -- $s
    ARCHDSL_RECOMPUTE=$rc timeout 120 python3 $R/.gpu_main/r6ab.py $1 $2 >> /tmp/r/ab.jsonl 2>>/tmp/r/ab.err
  done
done
ARCHDSL_RECOMPUTE=1 timeout 120 python3 $R/.gpu_main/r6ab.py $R/specs/rwkv6.rnn new prof > /tmp/r/prof-new.txt 2>&1
ARCHDSL_RECOMPUTE=1 timeout 120 python3 $R/.gpu_main/r6ab.py $R/.gpu_main/rwkv6_old.rnn old prof > /tmp/r/prof-old.txt 2>&1
pack; cat /tmp/r/ab.jsonl; tail -3 /tmp/r/ab.err; head -32 /tmp/r/prof-new.txt; head -30 /tmp/r/prof-old.txt
