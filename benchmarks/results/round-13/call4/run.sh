#!/bin/bash
# session 13, call 5: rwkv6 layer (B 8 x T 512, bf16 autocast), spec before/after rounded() (held in bf16), alternating
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sf $R/specs specs && mkdir -p bench && cp $R/benchmarks/*.py bench/
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; echo $C > /tmp/r/commit.txt; date -u > /tmp/r/date.txt
pack() { (cd /tmp/r && tar czf $OUT/r.tgz . 2>/dev/null); }
for rep in 1 2; do
  for s in "$R/specs/rwkv6.rnn new" "$R/.gpu_main/rwkv6_old.rnn old"; do
    set -- $s
    timeout 60 python3 $R/.gpu_main/r6ab.py $1 $2 >> /tmp/r/ab.jsonl 2>>/tmp/r/ab.err; pack
  done
done
timeout 40 python3 $R/.gpu_main/r6ab.py $R/specs/rwkv6.rnn new prof > /tmp/r/prof-new.txt 2>&1; pack
cat /tmp/r/ab.jsonl; grep "Self CUDA time total" /tmp/r/prof-new.txt; tail -2 /tmp/r/ab.err
