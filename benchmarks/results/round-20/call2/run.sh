#!/bin/bash
# session 20, call 2 (one GPU): the short convolution's forward blocks and warps (GDN_100m: six forward
# launches a call, three of them the backward's recompute); the operators by input shape (GDN_100m)
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s20b
mkdir -p $D /tmp/w20b && cd /tmp/w20b && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 560))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
layers() {  # label, case, conv settings...
  local label=$1 case=$2; shift 2
  stamp "layers $label"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --rows 24 --cases "$case" --commit $C --out $D/layers-$label.md ${@:+--conv "$@"} > $D/layers-$label.log 2>&1
  stamp "layers $label rc=$?"; pack
}
layers c1-def "gdn GDN_100m"
layers c2-64x64 "gdn GDN_100m" fwd.bt=64
layers c3-32x128 "gdn GDN_100m" fwd.bc=128
layers c4-64x128w8 "gdn GDN_100m" fwd.bt=64 fwd.bc=128 fwd.warps=8
layers c5-128x64w8 "gdn GDN_100m" fwd.bt=128 fwd.warps=8
layers c6-16x128 "gdn GDN_100m" fwd.bt=16 fwd.bc=128
layers c7-bseg256 "gdn GDN_100m" bwd.seg=256
layers c8-def "gdn GDN_100m"
stamp "ops"
timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --ops --rows 60 --cases "gdn GDN_100m" --commit $C > $D/ops-gdn.log 2>&1
stamp "ops rc=$?"; pack
layers l1-gla "gla GLA_100m"
cat $D/times.txt
for f in $D/layers-*.log; do echo "== $f $(grep 'Self CUDA time total' $f)"; grep -E "_conv|chunk_cumsum" $f | awk '{print $1, $(NF-3), $(NF-1)}'; done
