#!/bin/bash
# session 21, call 3 (one GPU): mamba2.rnn (products tf32 and half) against mamba_ssm's Mamba2 in one
# process; gdn.rnn (tf32 and half) against fla's GatedDeltaNet again (a second call); GLA_100m tf32/half
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s21c
mkdir -p $D /tmp/w21c && cd /tmp/w21c && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
T0=$(date +%s); END=$((T0 + 520))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton,fla,mamba_ssm;print(torch.__version__, triton.__version__, fla.__version__, mamba_ssm.__version__)" >> $D/device.txt 2>&1
echo $C > $D/commit.txt; date -u > $D/date.txt
( while sleep 20; do pack; done ) & P=$!
for case in "mamba2 Mamba2_100m" "gdn GDN_100m"; do
  n=${case%% *}; stamp "peers $n"
  timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --profile --rows 30 --cases "$case" --products tf32 half --commit $C --out $D/peers-$n.md > $D/peers-$n.log 2>&1
  stamp "peers $n rc=$?"; pack
done
stamp "layers gla"
timeout $(left) python3 bench/chunked.py --chunk 64 --no-loop --no-peers --profile --rows 30 --cases "gla GLA_100m" --products tf32 half --commit $C --out $D/layers-gla.md > $D/layers-gla.log 2>&1
stamp "layers gla rc=$?"; kill $P; pack
cat $D/times.txt; for f in $D/*.md; do echo "== $f"; grep "^| " $f | tail -3; done
