#!/bin/bash
# session 20, call 4 (one GPU): gla.rnn against fla's chunk_gla in one process (packs every 20 s)
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s20d
mkdir -p $D /tmp/w20d && cd /tmp/w20d && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 570))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
stamp "gla peers"
( while sleep 20; do pack; done ) & P=$!
timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --profile --rows 24 --cases "gla GLA_100m" --commit $C --out $D/gla.md > $D/gla.log 2>&1
stamp "gla peers rc=$?"; kill $P; pack
cat $D/times.txt; cat $D/gla.md
grep -E "Self CUDA time total|^profile" $D/gla.log
