#!/bin/bash
# session 16, call 5 (one GPU): the final build (dmat in one pass, dv at a key block of 64): GDN_100m GPU
# time per kernel, the GPU tests, then against fla's GatedDeltaNet
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 370))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a /tmp/r/times.txt; }
pack() { (cd /tmp/r && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> /tmp/r/device.txt 2>&1
echo $C > /tmp/r/commit.txt; date -u > /tmp/r/date.txt
stamp "layers"
timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --cases "gdn GDN_100m" --commit $C --out /tmp/r/layers.md > /tmp/r/layers.log 2>&1
stamp "layers rc=$?"; pack
stamp "gpu tests"; TRITON_INTERPRET=0 timeout 120 python3 -m pytest -m gpu tests/test_gpu.py -k "every_spec" -q -p no:cacheprovider > /tmp/r/gpu-tests.log 2>&1; stamp "gpu tests rc=$?"; pack
stamp "peers"
timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --profile --cases "gdn GDN_100m" --commit $C --out /tmp/r/peers.md > /tmp/r/peers.log 2>&1
stamp "peers rc=$?"; pack
cat /tmp/r/times.txt; tail -2 /tmp/r/gpu-tests.log
for f in /tmp/r/layers.log /tmp/r/peers.log; do echo "== $f"; grep -E "chunk_|^\| gdn" $f | awk '{print $1, $(NF-1)}'; done
grep "^| gdn" /tmp/r/peers.md
