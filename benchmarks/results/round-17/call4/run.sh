#!/bin/bash
# session 17, call 4 (one GPU): today's defaults (joint delta rule, dq/dk at 4 warps and two stages, dqa at 4 warps):
# GDN_100m GPU time per kernel with two more launch variants; every chunked form's kernels against float64 autograd;
# E88_d12h32 identity chunked against its loop; then gdn.rnn against fla GatedDeltaNet
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r4 /tmp/w && cd /tmp/w && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 570))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a /tmp/r4/times.txt; }
pack() { (cd /tmp/r4 && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r4/device.txt; python3 -c "import torch,triton,fla,mamba_ssm;print(torch.__version__, triton.__version__, fla.__version__, mamba_ssm.__version__)" >> /tmp/r4/device.txt 2>&1
echo $C > /tmp/r4/commit.txt; date -u > /tmp/r4/date.txt
variant() {  # label, launch settings...
  local label=$1; shift
  stamp "gdn $label"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --cases "gdn GDN_100m" --commit $C --out /tmp/r4/gdn-$label.md ${@:+--launch "$@"} > /tmp/r4/gdn-$label.log 2>&1
  stamp "gdn $label rc=$?"; pack
}
variant 1-default
variant 2-prep8 prep_warps=8
variant 3-output8 output_warps=8
stamp "forms"; timeout 150 python3 bench/chunked_forms_check.py > /tmp/r4/forms.log 2>&1; stamp "forms rc=$?"; pack
stamp "e88 identity"
timeout $(left) python3 bench/chunked.py --chunk 64 --no-peers --profile --cases "e88 E88_d12h32 identity" --commit $C --out /tmp/r4/e88-identity.md > /tmp/r4/e88-identity.log 2>&1
stamp "e88 identity rc=$?"; pack
stamp "peers"
timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --profile --cases "gdn GDN_100m" --commit $C --out /tmp/r4/peers.md > /tmp/r4/peers.log 2>&1
stamp "peers rc=$?"; pack
cat /tmp/r4/times.txt; cat /tmp/r4/forms.log
for f in /tmp/r4/gdn-*.log /tmp/r4/peers.log; do echo "== $f $(grep 'Self CUDA time total' $f)"; grep -E "^ *chunk_" $f | awk '{print $1, $(NF-1)}'; done
cat /tmp/r4/e88-identity.md | tail -3; grep -E "Self CUDA time total" /tmp/r4/e88-identity.log; cat /tmp/r4/peers.md | tail -3
