#!/bin/bash
# session 20, call 3 (one GPU): GDN_100m with the tied correction (tie=1) against b whole (tie=0),
# alternating; the convolution's forward at 256 channels; Mamba2_100m and GLA_100m; then gdn.rnn and
# mamba2.rnn against fla's GatedDeltaNet and mamba_ssm's Mamba2 in one process (packs every 20 s)
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s20c
mkdir -p $D /tmp/w20c && cd /tmp/w20c && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 565))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton,fla,mamba_ssm;print(torch.__version__, triton.__version__, fla.__version__, mamba_ssm.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
layers() {  # label, case, extra args...
  local label=$1 case=$2; shift 2
  stamp "layers $label"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --rows 24 --cases "$case" --commit $C --out $D/layers-$label.md "$@" > $D/layers-$label.log 2>&1
  local rc=$?; stamp "layers $label rc=$rc"; pack; return $rc
}
layers t1-tie "gdn GDN_100m"; TIE=$?
layers t2-whole "gdn GDN_100m" --launch tie=0
layers t3-tie "gdn GDN_100m"
layers t4-whole "gdn GDN_100m" --launch tie=0
layers c1-16x256 "gdn GDN_100m" --conv fwd.bc=256
layers c2-32x256 "gdn GDN_100m" --conv fwd.bt=32 fwd.bc=256
layers c3-w8 "gdn GDN_100m" --conv fwd.warps=8
layers m1 "mamba2 Mamba2_100m"
layers l1 "gla GLA_100m"
EXTRA=""; [ $TIE -ne 0 ] && EXTRA="--launch tie=0"
stamp "peers (tie rc=$TIE) $EXTRA"
( while sleep 20; do pack; done ) & P=$!
timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --profile --rows 24 --cases "gdn GDN_100m" "mamba2 Mamba2_100m" --commit $C --out $D/peers.md $EXTRA > $D/peers.log 2>&1
stamp "peers rc=$?"; kill $P; pack
cat $D/times.txt; cat $D/peers.md
for f in $D/layers-*.log; do echo "== $f $(grep 'Self CUDA time total' $f)"; grep -E "^ *chunk_|_conv" $f | awk '{print $1, $(NF-3), $(NF-1)}'; done
grep -E "Self CUDA time total|^profile" $D/peers.log
