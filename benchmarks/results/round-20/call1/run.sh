#!/bin/bash
# session 20, call 1 (one GPU): GLA_100m parallel_cumsum 0/1 alternating (G kept for the backward: one
# cumsum launch a call); full kernel tables of GDN_100m (recompute on / off) and Mamba2_100m
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s20a
mkdir -p $D /tmp/w20a && cd /tmp/w20a && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 560))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
layers() {  # label, case, rows, launch...
  local label=$1 case=$2 rows=$3; shift 3
  stamp "layers $label"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --rows $rows --cases "$case" --commit $C --out $D/layers-$label.md ${@:+--launch "$@"} > $D/layers-$label.log 2>&1
  stamp "layers $label rc=$?"; pack
}
layers a1-pc0 "gla GLA_100m" 16; layers a2-pc1 "gla GLA_100m" 16 parallel_cumsum=1
layers a3-pc0 "gla GLA_100m" 16; layers a4-pc1 "gla GLA_100m" 16 parallel_cumsum=1
layers g1-full "gdn GDN_100m" 90
ARCHDSL_RECOMPUTE=0 layers g2-norecompute "gdn GDN_100m" 30
layers m1-full "mamba2 Mamba2_100m" 90
layers g3-full "gdn GDN_100m" 30
cat $D/times.txt
for f in $D/layers-*.log; do echo "== $f $(grep 'Self CUDA time total' $f)"; grep -E "^ *chunk_|token|readout" $f | awk '{print $1, $(NF-3), $(NF-1)}'; done
