#!/bin/bash
# session 17, call 1 (one GPU): the joint delta rule (one rank-one term: gdn, e88 identity) against c9e2468,
# GDN_100m GPU time per kernel, alternating; the chunked check (gdn, e88 identity); then the new build against fla GatedDeltaNet
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/base $R/.gpu_main/base/*.whl || exit 1
T0=$(date +%s); END=$((T0 + 560))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a /tmp/r/times.txt; }
pack() { (cd /tmp/r && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; python3 -c "import torch,triton,fla,mamba_ssm;print(torch.__version__, triton.__version__, fla.__version__, mamba_ssm.__version__)" >> /tmp/r/device.txt 2>&1
echo $C > /tmp/r/commit.txt; date -u > /tmp/r/date.txt
layers() {  # label, build (base|new)
  stamp "layers $1"
  local pp=$PYTHONPATH; [ $2 = base ] && pp=/tmp/base:$PYTHONPATH
  PYTHONPATH=$pp timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --cases "gdn GDN_100m" --commit $2 --out /tmp/r/layers-$1.md > /tmp/r/layers-$1.log 2>&1
  stamp "layers $1 rc=$?"; pack
}
layers 1-base base; layers 2-new new; layers 3-base base; layers 4-new new
stamp "chunked check"; TRITON_INTERPRET=0 timeout 200 python3 bench/chunked_check.py gdn e88 > /tmp/r/chunked-check.log 2>&1; stamp "chunked check rc=$?"; pack
stamp "peers"
timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --profile --cases "gdn GDN_100m" --commit $C --out /tmp/r/peers.md > /tmp/r/peers.log 2>&1
stamp "peers rc=$?"; pack
cat /tmp/r/times.txt; tail -30 /tmp/r/chunked-check.log
for f in /tmp/r/layers-*.log /tmp/r/peers.log; do echo "== $f"; grep -E "chunk_|Self CUDA" $f | awk '{print $1, $(NF-3), $(NF-1)}'; done
cat /tmp/r/peers.md
