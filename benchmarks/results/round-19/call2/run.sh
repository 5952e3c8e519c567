#!/bin/bash
# session 19, call 2 (one GPU): GLA_100m's dv and output kernels at their own warps and value blocks
# (dv_warps, dv_bv, output_bv, output_warps), Mamba2_100m's dv at 8 warps, alternating with the defaults
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s19b
mkdir -p $D /tmp/w19b && cd /tmp/w19b && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
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
  layers l$r-def "gla GLA_100m"; layers l$r-dvw8 "gla GLA_100m" dv_warps=8
  layers l$r-dvw8bv128 "gla GLA_100m" dv_warps=8 dv_bv=128; layers l$r-obv128 "gla GLA_100m" output_bv=128
  layers l$r-ow8bv128 "gla GLA_100m" output_bv=128 output_warps=8; layers l$r-tw8 "gla GLA_100m" token_warps=8
  layers m$r-def "mamba2 Mamba2_100m"; layers m$r-dvw8 "mamba2 Mamba2_100m" dv_warps=8
done
cat $D/times.txt
for f in $D/layers-*.log; do echo "== $f $(grep 'Self CUDA time total' $f)"; grep -E "^ *chunk_|token|readout" $f | awk '{print $1, $(NF-3), $(NF-1)}'; done
