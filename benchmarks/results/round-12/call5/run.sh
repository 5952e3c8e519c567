#!/bin/bash
# session 12 call 5: retnet after bf16 products (bba81e9): bf16 agreement with fla; GPU time against fla and the loop
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sf $R/specs specs && ln -sf $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a /tmp/r/times.txt; }
pack() { (cd /tmp/r && tar czf $OUT/r.tgz --exclude='*.pt' --exclude='*.safetensors' . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> /tmp/r/device.txt 2>&1
echo $C > /tmp/r/commit.txt
( export CUDA_VISIBLE_DEVICES=0; stamp "retnet bf16 agreement"
  timeout 230 python3 bench/oracle.py --out /tmp/r/retnet-bf16 --no-time --first-config --specs retnet --dtypes bf16 > /tmp/r/retnet-bf16.log 2>&1
  stamp "retnet bf16 rc=$?"; pack
  stamp "leftovers"; timeout 120 python3 bench/leftovers.py --specs gdn:GDN_100m gla:GLA_100m --B 8 --T 512 > /tmp/r/leftovers.txt 2> /tmp/r/leftovers.log
  stamp "leftovers rc=$?"; pack ) &
( export CUDA_VISIBLE_DEVICES=1; stamp "retnet peers"
  timeout 230 python3 bench/chunked.py --chunk 64 --profile --cases "retnet RetNet_100m" --commit $C --out /tmp/r/retnet.md > /tmp/r/retnet.log 2>&1
  stamp "retnet peers rc=$?"; pack ) &
wait; pack; stamp all done
