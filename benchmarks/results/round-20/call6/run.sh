#!/bin/bash
# session 20, call 6 (one GPU): GDN_100m with chunk_dqa_kernel's products as three TF32 products
# (dqa_x3=1) against one (dqa_x3=0): GPU time, alternating, then gdn's bf16 gradients against the
# reference (T 130, chunks of 64, seeds 0-3) either way; the convolution's backward blocks if time is left
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s20f
mkdir -p $D /tmp/w20f && cd /tmp/w20f && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/ && cp $R/.gpu_main/acc2.py .
T0=$(date +%s); END=$((T0 + 285))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
layers() {  # label, case, extra args...
  local label=$1 case=$2; shift 2
  stamp "layers $label"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --rows 24 --cases "$case" --commit $C --out $D/layers-$label.md "$@" > $D/layers-$label.log 2>&1
  stamp "layers $label rc=$?"; pack
}
layers x1-one "gdn GDN_100m"
layers x2-three "gdn GDN_100m" --launch dqa_x3=1
layers x3-one "gdn GDN_100m"
layers x4-three "gdn GDN_100m" --launch dqa_x3=1
for x in 0 1; do stamp "acc gdn dqa_x3=$x"; timeout $(( $(left) < 75 ? $(left) : 75 )) python3 acc2.py gdn 4 dqa_x3=$x 2>&1 | grep -v Warn | tee -a $D/acc.log; pack; done
layers b1-bc64 "gdn GDN_100m" --conv bwd.bc=64
layers b2-bt32 "gdn GDN_100m" --conv bwd.bt=32
cat $D/times.txt; cat $D/acc.log
for f in $D/layers-*.log; do echo "== $f $(grep 'Self CUDA time total' $f)"; grep -E "chunk_dqa|_conv_bwd" $f | awk '{print $1, $(NF-3), $(NF-1)}'; done
