#!/bin/bash
# session 21, call 4 (one GPU): E88_d12h32 with nonlin = identity, chunked (tf32, half) against its
# sequential loop in one process; a 100M gdn.rnn LM trained 40 steps eagerly with --products tf32 and half
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s21d
mkdir -p $D /tmp/w21d && cd /tmp/w21d && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 270))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
stamp "e88 identity"
timeout $(left) python3 bench/chunked.py --chunk 64 --no-peers --profile --rows 12 --cases "e88 E88_d12h32 identity" --products tf32 half --commit $C --out $D/e88-identity.md > $D/e88-identity.log 2>&1
stamp "e88 rc=$?"; pack
for p in tf32 half; do
  stamp "train gdn $p"
  timeout $(left) archdsl train gdn --preset GDN_100m --backend triton --products $p --steps 40 --eval-bytes 64K --no-progress --out $D/train-$p > $D/train-$p.log 2>&1
  stamp "train gdn $p rc=$?"; pack
done
cat $D/times.txt; grep "^| " $D/e88-identity.md; for p in tf32 half; do tail -12 $D/train-$p.log; done
