#!/bin/bash
# session 22, call 5 (one GPU): gdn.rnn (products tf32 and half, the projections of x as one GEMM)
# against fla's GatedDeltaNet in one process, GDN_100m, B 32 x T 512, bf16 autocast, chunks of 64
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s22e
mkdir -p $D /tmp/w22e && cd /tmp/w22e && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 560))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
( while sleep 20; do pack; done ) & P=$!
stamp "peers"
timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --profile --rows 30 --cases "gdn GDN_100m" --products tf32 half --commit $C --out $D/peers.md > $D/peers.log 2>&1
stamp "peers rc=$?"; kill $P; pack
cat $D/times.txt; grep "^| " $D/peers.md; grep "Self CUDA time total" $D/peers.log
