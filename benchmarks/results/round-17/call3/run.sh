#!/bin/bash
# session 17, call 3 (one GPU): launch settings of the joint delta rule's kernels at GDN_100m around split_warps=4 (GPU time per kernel,
# split_warps=4 first and last)
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 560))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a /tmp/r/times.txt; }
pack() { (cd /tmp/r && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; python3 -c "import torch,triton,fla,mamba_ssm;print(torch.__version__, triton.__version__, fla.__version__, mamba_ssm.__version__)" >> /tmp/r/device.txt 2>&1
echo $C > /tmp/r/commit.txt; date -u > /tmp/r/date.txt
variant() {  # label, launch settings...
  local label=$1; shift
  stamp "gdn $label"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --cases "gdn GDN_100m" --commit $C --out /tmp/r/gdn-$label.md ${@:+--launch "$@"} > /tmp/r/gdn-$label.log 2>&1
  stamp "gdn $label rc=$?"; pack
}
variant 1-w4 split_warps=4
variant 2-w4-s2 split_warps=4 split_stages=2
variant 3-w4-bk128 split_warps=4 split_bk=128
variant 4-w4-bk32 split_warps=4 split_bk=32
variant 5-w4-dqa4 split_warps=4 dqa_warps=4
variant 6-w4-dstates8 split_warps=4 dstates_warps=8
variant 7-w4-states8 split_warps=4 states_warps=8
variant 8-w4 split_warps=4
cat /tmp/r/times.txt
for f in /tmp/r/gdn-*.log; do echo "== $f $(grep 'Self CUDA time total' $f)"; grep -E "^ *chunk_" $f | awk '{print $1, $(NF-1)}'; done
