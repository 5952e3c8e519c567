#!/bin/bash
# session 18, call 4 (one GPU): E88_d12h32 (loop strategy, tanh) one layer and a depth-2 LM step, base 5378442 against
# new (the readout writes y in bf16), alternating; GPU time from the profiler's tables
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s18d
mkdir -p $D /tmp/w18d && cd /tmp/w18d && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/base $R/.gpu_main/base/*.whl || exit 1
T0=$(date +%s); END=$((T0 + 400))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
for r in 1 2; do
  for b in base new; do
    stamp "e88 $b $r"; pp=$PYTHONPATH; [ $b = base ] && pp=/tmp/base:$PYTHONPATH
    PYTHONPATH=$pp timeout $(left) python3 bench/lm_layers.py --models e88:3200:heads=12,n=32 --depth 2 --rows 12 > $D/e88-$b-$r.log 2>&1
    stamp "e88 $b $r rc=$?"; pack
  done
done
cat $D/times.txt
for f in $D/e88-*.log; do echo "== $f"; grep -E "^# |^## profile|Self CUDA time total|readout|\.to|copy_|elementwise" $f | cut -c1-160; done
