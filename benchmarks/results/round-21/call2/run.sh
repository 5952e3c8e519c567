#!/bin/bash
# session 21, call 2 (one GPU): GDN_100m and Mamba2_100m with products tf32 (default) and half, in
# one process each, twice; each side's bf16 distance to the fp32 reference (benchmarks/precision.py:
# gdn tf32 / half against fla's GatedDeltaNet); gdn.rnn (tf32, half) against fla's GatedDeltaNet in
# one process; then mamba2's precision against mamba_ssm if time is left
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s21b
mkdir -p $D /tmp/w21b && cd /tmp/w21b && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 565))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton,fla,mamba_ssm;print(torch.__version__, triton.__version__, fla.__version__, mamba_ssm.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
layers() {  # label, case, extra args...
  local label=$1 case=$2; shift 2
  stamp "layers $label"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --rows 30 --cases "$case" --commit $C --out $D/layers-$label.md "$@" > $D/layers-$label.log 2>&1
  stamp "layers $label rc=$?"; pack
}
layers g1 "gdn GDN_100m" --products tf32 half
layers g2 "gdn GDN_100m" --products half tf32
layers m1 "mamba2 Mamba2_100m" --products tf32 half
( while sleep 20; do pack; done ) & P=$!
stamp "precision gdn"
timeout $(left) python3 bench/precision.py --specs gdn --variants "" "products=half" --shapes 2x512 --out $D/precision-gdn.md > $D/precision-gdn.log 2>&1
stamp "precision gdn rc=$?"; pack
stamp "peers gdn"
timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --profile --rows 30 --cases "gdn GDN_100m" --products tf32 half --commit $C --out $D/peers-gdn.md > $D/peers-gdn.log 2>&1
stamp "peers gdn rc=$?"; pack
stamp "precision mamba2"
timeout $(left) python3 bench/precision.py --specs mamba2 --variants "" "products=half" --shapes 2x512 --out $D/precision-mamba2.md > $D/precision-mamba2.log 2>&1
stamp "precision mamba2 rc=$?"; kill $P; pack
cat $D/times.txt; cat $D/precision-*.md; cat $D/peers-gdn.md 2>/dev/null
for f in $D/layers-*.md; do echo "== $f"; grep "^| " $f | tail -2; done
