#!/bin/bash
# session 18, call 2 (one GPU): gdn.rnn against fla's GatedDeltaNet and mamba2.rnn against mamba_ssm's Mamba2
# (today's build: coefficients and y narrowed), then E88_d12h32 whole layer (loop strategy) base 5378442 against new, alternating
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s18b
mkdir -p $D /tmp/w18b && cd /tmp/w18b && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/base $R/.gpu_main/base/*.whl || exit 1
T0=$(date +%s); END=$((T0 + 575))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
stamp "peers"
timeout 400 python3 bench/chunked.py --chunk 64 --no-loop --profile --cases "gdn GDN_100m" "mamba2 Mamba2_100m" --commit $C --out $D/peers.md > $D/peers.log 2>&1
stamp "peers rc=$?"; pack
for r in 1 2; do
  for b in base new; do
    stamp "e88 $b $r"; pp=$PYTHONPATH; [ $b = base ] && pp=/tmp/base:$PYTHONPATH
    PYTHONPATH=$pp timeout $(left) python3 bench/ab_layers.py --label $b-$r --out $D/e88.jsonl --only E88_d12h32 > $D/e88-$b-$r.log 2>&1
    stamp "e88 $b $r rc=$?"; pack
  done
done
python3 bench/ab_layers.py --table $D/e88.jsonl > $D/e88.md 2>&1; pack
cat $D/times.txt; cat $D/peers.md; cat $D/e88.md
grep -E "Self CUDA time total|^profile" $D/peers.log
