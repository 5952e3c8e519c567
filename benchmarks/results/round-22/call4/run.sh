#!/bin/bash
# session 22, call 4 (one GPU): the projections of x as one GEMM padded to a multiple of 8 rows (new,
# 6d494b6) against one GEMM a line (old, 38119a3), alternating old/new/old/new in separate processes:
# GDN_100m and GLA_100m layers (benchmarks/chunked.py, profiler GPU time), E88_d12h32 and gdn at 100M
# width in a depth-2 LM and one layer alone (benchmarks/lm_layers.py)
R=$1
C=$(cat $R/.gpu_main/commit); CO=$(cat $R/.gpu_main/old/commit)
D=/tmp/s22d
mkdir -p $D /tmp/w22d /tmp/site_old && cd /tmp/w22d && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_old $R/.gpu_main/old/archdsl-*.whl
T0=$(date +%s); END=$((T0 + 560))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
echo "new $C old $CO" > $D/commit.txt; date -u > $D/date.txt
run() {  # label, build (old/new)
  local label=$1 build=$2
  local pp=$PYTHONPATH c=$C; [ $build = old ] && pp=/tmp/site_old:$PYTHONPATH && c=$CO
  stamp "layers $label ($build)"
  PYTHONPATH=$pp timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --rows 16 --cases "gdn GDN_100m" "gla GLA_100m" --commit $c --out $D/layers-$label.md > $D/layers-$label.log 2>&1
  stamp "layers $label rc=$?"; pack
  stamp "lm $label ($build)"
  PYTHONPATH=$pp timeout $(left) python3 bench/lm_layers.py --models e88:3200:heads=12,n=32 gdn:1024:heads=8 --depth 2 --rows 12 > $D/lm-$label.log 2>&1
  stamp "lm $label rc=$?"; pack
}
run a1 old
run b1 new
run a2 old
run b2 new
cat $D/times.txt
for f in $D/layers-*.md; do echo "== $f"; grep "^| " $f | tail -2; done
for f in $D/layers-*.log; do echo "== $f"; grep "Self CUDA time total" $f; done
for f in $D/lm-*.log; do echo "== $f"; grep -E "^# |Self CUDA time total" $f; done
