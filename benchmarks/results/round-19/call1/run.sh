#!/bin/bash
# session 19, call 1 (one GPU): the walks reading precomputed chunk-local cumulative log-decays (walk_cumsum=1)
# against scanning them in the loop (walk_cumsum=0), same build, alternating: GLA_100m (with walk stages 2 and a
# value block of 32), GDN_100m, Mamba2_100m; GPU time per kernel from the profiler
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s19a
mkdir -p $D /tmp/w19a && cd /tmp/w19a && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 560))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
layers() {  # label, case, launch...
  local label=$1 case=$2; shift 2
  stamp "layers $label"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --cases "$case" --commit $C --out $D/layers-$label.md ${@:+--launch "$@"} > $D/layers-$label.log 2>&1
  stamp "layers $label rc=$?"; pack
}
for r in 1 2; do
  layers l$r-off "gla GLA_100m" walk_cumsum=0; layers l$r-on "gla GLA_100m"
  layers l$r-s2 "gla GLA_100m" states_stages=2 dstates_stages=2; layers l$r-bv32 "gla GLA_100m" states_bv=32 dstates_bv=32
done
for r in 1 2; do
  layers g$r-off "gdn GDN_100m" walk_cumsum=0; layers g$r-on "gdn GDN_100m"
  layers m$r-off "mamba2 Mamba2_100m" walk_cumsum=0; layers m$r-on "mamba2 Mamba2_100m"
done
cat $D/times.txt
for f in $D/layers-*.log; do echo "== $f $(grep 'Self CUDA time total' $f)"; grep -E "^ *chunk_|token|readout" $f | awk '{print $1, $(NF-3), $(NF-1)}'; done
