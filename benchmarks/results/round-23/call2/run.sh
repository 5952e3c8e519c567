#!/bin/bash
# session 23, call 2 (one GPU): generate with CUDA graphs (GPU tests, bytes/s eager against graphs at
# 100M), and the eager decode step before/after the history's longest-chain rule (host_time.py, old/new)
R=$1
C=$(cat $R/.gpu_main/commit); CO=$(cat $R/.gpu_main/old/commit)
D=/tmp/s23b
mkdir -p $D/prof-old $D/prof-new /tmp/w23b /tmp/site_old && cd /tmp/w23b && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_old $R/.gpu_main/old/archdsl-*.whl
T0=$(date +%s); END=$((T0 + 570))
left() { echo $(( END - $(date +%s) )); }
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
echo "new $C old $CO" > $D/commit.txt; date -u > $D/date.txt
( while sleep 20; do pack; done ) & P=$!
stamp "gpu tests"; TRITON_INTERPRET=0 timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -k "generate or first_call" -q -p no:cacheprovider > $D/gpu-tests.log 2>&1; stamp "gpu tests rc=$?"; pack
stamp "generate"; timeout 240 python3 bench/generate_speed.py --models e88:E88_d12h32 gdn:GDN_100m mamba2:Mamba2_100m --bytes 256 > $D/generate.md 2> $D/generate.log; stamp "generate rc=$?"; pack
for side in old new; do
  pp=$PYTHONPATH; [ $side = old ] && pp=/tmp/site_old:$PYTHONPATH
  stamp "host $side"; PYTHONPATH=$pp timeout $(( $(left) / 2 )) python3 bench/host_time.py --cases gdn e88 mamba2 --cprofile $D/prof-$side > $D/host-$side.md 2> $D/host-$side.log; stamp "host $side rc=$?"; pack
done
kill $P; pack
cat $D/times.txt; tail -5 $D/gpu-tests.log; cat $D/generate.md; tail -3 $D/generate.log; cat $D/host-old.md $D/host-new.md
