#!/bin/bash
# session 19, call 4 (one GPU): GLA_100m with the walks scanning their log-decays (walk_cumsum=0) against today's
# defaults, then gla.rnn against fla's chunk_gla in one process (packs every 20 s)
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s19d
mkdir -p $D /tmp/w19d && cd /tmp/w19d && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 565))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
layers() {  # label, case, launch...
  local label=$1 case=$2; shift 2
  stamp "layers $label"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --cases "$case" --commit $C --out $D/layers-$label.md ${@:+--launch "$@"} > $D/layers-$label.log 2>&1
  stamp "layers $label rc=$?"; pack
}
layers l1-scan "gla GLA_100m" walk_cumsum=0; layers l1-def "gla GLA_100m"
stamp "gla peers"
( while sleep 20; do pack; done ) & P=$!
timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --profile --cases "gla GLA_100m" --commit $C --out $D/gla.md > $D/gla.log 2>&1
stamp "gla peers rc=$?"; kill $P; pack
cat $D/times.txt; cat $D/gla.md
for f in $D/layers-*.log; do echo "== $f $(grep 'Self CUDA time total' $f)"; grep -E "^ *chunk_|token|readout" $f | awk '{print $1, $(NF-3), $(NF-1)}'; done
grep -E "Self CUDA time total|^profile" $D/gla.log
