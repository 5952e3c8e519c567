#!/bin/bash
# session 18, call 1 (one GPU): the backward walk's products as three TF32 products (dstates_x3 0/1/2):
# gdn and e88-identity bf16 accuracy against the reference at chunks of 64 (GPU), then GDN_100m GPU time per
# kernel (base 5378442 against new, alternating, and new at x3 0/1/2), Mamba2_100m base against new (narrow coefficients)
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s18a
mkdir -p $D /tmp/w18 && cd /tmp/w18 && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/ && cp $R/.gpu_main/acc2.py .
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/base $R/.gpu_main/base/*.whl || exit 1
T0=$(date +%s); END=$((T0 + 570))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
for x in 0 1 2; do stamp "acc gdn x3=$x"; timeout 90 python3 acc2.py gdn 4 dstates_x3=$x 2>&1 | grep -v Warn | tee -a $D/acc.log; pack; done
stamp "acc e88"; timeout 60 python3 acc2.py e88 2 dstates_x3=0 2>&1 | grep -v Warn | tee -a $D/acc.log; timeout 60 python3 acc2.py e88 2 dstates_x3=1 2>&1 | grep -v Warn | tee -a $D/acc.log; pack
layers() {  # label, build, case, launch...
  local label=$1 build=$2 case=$3; shift 3
  stamp "layers $label"
  local pp=$PYTHONPATH; [ $build = base ] && pp=/tmp/base:$PYTHONPATH
  PYTHONPATH=$pp timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --cases "$case" --commit $build --out $D/layers-$label.md ${@:+--launch "$@"} > $D/layers-$label.log 2>&1
  stamp "layers $label rc=$?"; pack
}
layers g1-base base "gdn GDN_100m"; layers g2-x2 new "gdn GDN_100m"; layers g3-x0 new "gdn GDN_100m" dstates_x3=0; layers g4-x1 new "gdn GDN_100m" dstates_x3=1
layers g5-base base "gdn GDN_100m"; layers g6-x2 new "gdn GDN_100m"
layers m1-base base "mamba2 Mamba2_100m"; layers m2-new new "mamba2 Mamba2_100m"; layers m3-base base "mamba2 Mamba2_100m"; layers m4-new new "mamba2 Mamba2_100m"
cat $D/times.txt; cat $D/acc.log
for f in $D/layers-*.log; do echo "== $f $(grep 'Self CUDA time total' $f)"; grep -E "^ *chunk_|token|readout|elementwise" $f | awk '{print $1, $(NF-3), $(NF-1)}'; done
