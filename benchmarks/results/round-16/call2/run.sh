#!/bin/bash
# session 16, call 2 (one GPU): launch settings of the restructured delta-rule backward (ee94b11),
# GDN_100m GPU time per kernel, one run each, the default twice
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 400))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a /tmp/r/times.txt; }
pack() { (cd /tmp/r && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; python3 -c "import torch,triton,fla,mamba_ssm;print(torch.__version__, triton.__version__, fla.__version__, mamba_ssm.__version__)" >> /tmp/r/device.txt 2>&1
echo $C > /tmp/r/commit.txt; date -u > /tmp/r/date.txt
layers() {  # label, launch settings...
  local label=$1; shift
  stamp "layers $label $*"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --cases "gdn GDN_100m" --commit $C ${@:+--launch "$@"} --out /tmp/r/layers-$label.md > /tmp/r/layers-$label.log 2>&1
  stamp "layers $label rc=$?"; pack
}
layers 1-default
layers 2-dqa64w4 dqa_bv=64 dqa_warps=4
layers 3-splitbk32 split_bk=32
layers 4-dstates-w8 dstates_warps=8
layers 5-dstates-bv32w8 dstates_bv=32 dstates_warps=8
layers 6-default
layers 7-states-bv32w8 states_bv=32 states_warps=8
cat /tmp/r/times.txt
for f in /tmp/r/layers-*.log; do echo "== $f"; grep -E "chunk_|Self CUDA|^\| gdn" $f | awk '{print $1, $(NF-1)}'; done
