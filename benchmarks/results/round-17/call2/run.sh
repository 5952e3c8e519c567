#!/bin/bash
# session 17, call 2 (one GPU): launch settings of the joint delta rule's kernels at GDN_100m (GPU time per kernel,
# the default settings first and last); then E88_d12h32 with nonlin = identity, chunked against its sequential loop
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
variant 1-default
variant 2-split_stages2 split_stages=2
variant 3-split_bk128 split_bk=128
variant 4-token_stages2 token_stages=2
variant 5-dstates_stages2 dstates_stages=2
variant 6-bv128 bv=128
variant 7-split_warps4 split_warps=4
variant 8-default
stamp "e88 identity"
timeout $(left) python3 bench/chunked.py --chunk 64 --no-peers --profile --cases "e88 E88_d12h32 identity" --commit $C --out /tmp/r/e88-identity.md > /tmp/r/e88-identity.log 2>&1
stamp "e88 identity rc=$?"; pack
cat /tmp/r/times.txt
for f in /tmp/r/gdn-*.log; do echo "== $f $(grep 'Self CUDA time total' $f)"; grep -E "^ *chunk_" $f | awk '{print $1, $(NF-1)}'; done
cat /tmp/r/e88-identity.md; grep -E "Self CUDA time total" /tmp/r/e88-identity.log
