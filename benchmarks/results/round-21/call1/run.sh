#!/bin/bash
# session 21, call 1 (one GPU): GDN_100m at 1bcea51 (each projection of x rounds its own copy under
# autocast) against f56a9bd+ (one rounding of x), alternating; the delta rule with 16-bit products
# (half_products=1) and 16-bit forward stores (half_forward=1); each side's bf16 distance to the fp32
# reference (benchmarks/precision.py: ours at three settings, fla's GatedDeltaNet); then gdn.rnn
# against fla's GatedDeltaNet in one process if time is left
R=$1
C=$(cat $R/.gpu_main/commit); CO=$(cat $R/.gpu_main/old/commit)
D=/tmp/s21a
mkdir -p $D /tmp/w21a /tmp/site_old && cd /tmp/w21a && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_old $R/.gpu_main/old/archdsl-*.whl
T0=$(date +%s); END=$((T0 + 560))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton,fla,mamba_ssm;print(torch.__version__, triton.__version__, fla.__version__, mamba_ssm.__version__)" >> $D/device.txt 2>&1
echo "new $C old $CO" > $D/commit.txt; date -u > $D/date.txt
layers() {  # label, build (old/new), case, extra args...
  local label=$1 build=$2 case=$3; shift 3
  local pp=$PYTHONPATH c=$C; [ $build = old ] && pp=/tmp/site_old:$PYTHONPATH && c=$CO
  stamp "layers $label ($build)"
  PYTHONPATH=$pp timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --rows 30 --cases "$case" --commit $c --out $D/layers-$label.md "$@" > $D/layers-$label.log 2>&1
  stamp "layers $label rc=$?"; pack
}
layers a1 old "gdn GDN_100m"
layers b1 new "gdn GDN_100m"
layers a2 old "gdn GDN_100m"
layers b2 new "gdn GDN_100m"
layers h1 new "gdn GDN_100m" --launch half_products=1
layers h2 new "gdn GDN_100m" --launch half_products=1 half_forward=1
stamp "precision"
( while sleep 20; do pack; done ) & P=$!
timeout $(left) python3 bench/precision.py --specs gdn --variants "" "half_products=1" "half_products=1,half_forward=1" --shapes 2x512 --out $D/precision.md > $D/precision.log 2>&1
stamp "precision rc=$?"; pack
stamp "peers"
timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --profile --rows 30 --cases "gdn GDN_100m" --commit $C --out $D/peers.md > $D/peers.log 2>&1
stamp "peers rc=$?"; kill $P; pack
cat $D/times.txt; cat $D/precision.md; cat $D/peers.md 2>/dev/null
for f in $D/layers-*.log; do echo "== $f $(grep 'Self CUDA time total' $f)"; grep -E "^ *chunk_|_to_copy|Cat|elementwise|add" $f | awk '{print $1, $(NF-3), $(NF-1)}' | head -14; done
