#!/bin/bash
# session 20, call 5 (one GPU): GDN_100m's output, prep and walk kernels at 8 warps, alternating with the defaults
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s20e
mkdir -p $D /tmp/w20e && cd /tmp/w20e && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 250))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
layers() {  # label, case, launch...
  local label=$1 case=$2; shift 2
  stamp "layers $label"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --rows 24 --cases "$case" --commit $C --out $D/layers-$label.md ${@:+--launch "$@"} > $D/layers-$label.log 2>&1
  stamp "layers $label rc=$?"; pack
}
layers w1-def "gdn GDN_100m"
layers w2-out8 "gdn GDN_100m" output_warps=8
layers w3-prep8 "gdn GDN_100m" prep_warps=8
layers w4-dst8 "gdn GDN_100m" dstates_warps=8
layers w5-st8 "gdn GDN_100m" states_warps=8
layers w6-def "gdn GDN_100m"
cat $D/times.txt
for f in $D/layers-*.log; do echo "== $f $(grep 'Self CUDA time total' $f)"; grep -E "^ *chunk_" $f | awk '{print $1, $(NF-3), $(NF-1)}'; done
