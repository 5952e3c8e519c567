#!/bin/bash
# session 18, call 3 (one GPU): gdn.rnn against fla's GatedDeltaNet and mamba2.rnn against mamba_ssm's Mamba2
# (today's build: coefficients and y narrowed; call 2 ran before LAUNCH["narrow"] was restored)
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s18c
mkdir -p $D /tmp/w18c && cd /tmp/w18c && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 575))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
stamp "peers"
timeout 400 python3 bench/chunked.py --chunk 64 --no-loop --profile --cases "gdn GDN_100m" "mamba2 Mamba2_100m" --commit $C --out $D/peers.md > $D/peers.log 2>&1
stamp "peers rc=$?"; pack
cat $D/times.txt; cat $D/peers.md
grep -E "Self CUDA time total|^profile" $D/peers.log
