#!/bin/bash
# session 24, call 2 (one GPU): generated modules at fixed plans, checkpoint stride 16 against stride 1
# and four variants of stride 1 (variants.py), timed in one process by benchmarks/module_ab.py
R=$1
D=/tmp/s24b
mkdir -p $D
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
cat $R/.gpu_main/commit > $D/commit.txt; date -u > $D/date.txt
cd $R/.gpu_main/mods
stamp "modules"; timeout 540 python3 $R/benchmarks/module_ab.py $(ls *.py | sort -t_ -k1,1) > $D/module_ab.md 2> $D/module_ab.err; stamp "modules rc=$?"; pack
cat $D/times.txt; cat $D/module_ab.md; tail -5 $D/module_ab.err
