#!/bin/bash
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sf $R/specs specs && ln -sf $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; echo $C > /tmp/r/commit.txt
pack() { (cd /tmp/r && tar czf $OUT/r.tgz --exclude='*.pt' --exclude='*.safetensors' . 2>/dev/null); }
timeout 150 python3 bench/oracle.py --out /tmp/r/retnet-bf16 --no-time --first-config --specs retnet --dtypes bf16 > /tmp/r/retnet-bf16.log 2>&1; echo "oracle rc=$?" >> /tmp/r/times.txt; pack
timeout 60 python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --cases "retnet RetNet_100m" --commit $C --out /tmp/r/retnet.md > /tmp/r/retnet.log 2>&1; echo "chunked rc=$?" >> /tmp/r/times.txt; pack
cat /tmp/r/times.txt; sed -n 5,9p /tmp/r/retnet-bf16/results.md; tail -2 /tmp/r/retnet.md
