#!/bin/bash
# session 14, call 3: every spec's cold and cached compile time at 100M (4 lanes) on an H100
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sf $R/specs specs && ln -sf $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; echo $C > /tmp/r/commit.txt; date -u > /tmp/r/date.txt
pack() { (cd /tmp/r && tar czf $OUT/r.tgz --exclude='*.pt' --exclude='*.safetensors' . 2>/dev/null); }
t0=$(date +%s)
SPECS=m2rnn,mlstm,retnet,rwkv6,rwkv7,hgrn2,gated_deltaproduct,gdn,gla,deltanet,kda,mamba2,e88,e75,mamba,e70,e71,e72,e73,e74,e61,e62,e63,e64,e65,e66,e67,e68,e1,e10,e42,e56,gru,lstm,mingru
timeout 400 python3 bench/compile_times.py --out /tmp/r/ct --lanes 4 --timeout 80 --commit $C --specs $SPECS > /tmp/r/ct.log 2>&1; echo "ct rc=$? $(( $(date +%s) - t0 ))s" >> /tmp/r/times.txt; pack
cat /tmp/r/times.txt; tail -40 /tmp/r/ct/results.md
