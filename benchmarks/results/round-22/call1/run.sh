#!/bin/bash
# session 22, call 1 (one GPU): E88_d12h32 with nonlin = identity, chunked (tf32, half) against its
# sequential loop in one process; a 100M gdn.rnn LM trained 40 steps eagerly with --products tf32 and
# half (run directories outside the returned folder: only logs and metrics come back)
R=$1
C=$(cat $R/.gpu_main/commit)
D=$OUT/r
mkdir -p $D /tmp/w22a && cd /tmp/w22a && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 540))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
for p in tf32 half; do
  stamp "train gdn $p"
  timeout $(( $(left) - 200 )) archdsl train gdn --preset GDN_100m --backend triton --products $p --steps 40 --eval-bytes 64K --no-progress --checkpoint-every 0 --out /tmp/train-$p > $D/train-$p.log 2>&1
  stamp "train gdn $p rc=$?"
  find /tmp/train-$p -maxdepth 1 -type f -size -2M \( -name '*.json' -o -name '*.md' -o -name '*.txt' -o -name '*.csv' -o -name '*.log' \) -exec cp {} $D/ \; 2>/dev/null
  for f in /tmp/train-$p/*.json; do [ -f "$f" ] && cp "$f" "$D/train-$p-$(basename $f)"; done
done
stamp "e88 identity"
timeout $(( $(left) - 10 )) python3 bench/chunked.py --chunk 64 --no-peers --profile --rows 12 --cases "e88 E88_d12h32 identity" --products tf32 half --commit $C --out $D/e88-identity.md > $D/e88-identity.log 2>&1
stamp "e88 rc=$?"
ls -la /tmp/train-tf32 /tmp/train-half > $D/train-dirs.txt 2>&1
cat $D/times.txt; grep "^| " $D/e88-identity.md | head -30; for p in tf32 half; do tail -8 $D/train-$p.log; done
