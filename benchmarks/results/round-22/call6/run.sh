#!/bin/bash
# session 22, call 6 (one GPU): archdsl bench E88_d12h32 at 100M under CUDA graphs (its best mode),
# the build before the projections of x ran as one GEMM (38119a3) and after (HEAD), one after the other
R=$1
C=$(cat $R/.gpu_main/commit); CO=$(cat $R/.gpu_main/old/commit)
D=/tmp/s22f
mkdir -p $D /tmp/w22f /tmp/site_old && cd /tmp/w22f && ln -sfn $R/specs specs
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_old $R/.gpu_main/old/archdsl-*.whl
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
echo "new $C old $CO" > $D/commit.txt; date -u > $D/date.txt
pack() { (cd $D && tar czf $OUT/r.tgz --exclude='*.pt' --exclude='*.safetensors' --exclude='*.ckpt' --exclude='*.png' . 2>/dev/null); }
( while sleep 20; do pack; done ) & P=$!
for side in old new; do
  pp=$PYTHONPATH; [ $side = old ] && pp=/tmp/site_old:$PYTHONPATH
  echo "[$(date -u +%T)] $side" >> $D/times.txt
  PYTHONPATH=$pp timeout 230 python3 -m archdsl.cli bench E88_d12h32 --params 100M --align 128 --minutes 0.5 --backend triton --modes cudagraphs --timeout 220 \
    --data $R/.data/corpus-train-1.txt.xz --val $R/.data/corpus-val.txt.xz --out $D/bench-$side > $D/bench-$side.log 2>&1
  echo "[$(date -u +%T)] $side rc=$?" >> $D/times.txt
done
kill $P; pack
cat $D/times.txt; for side in old new; do grep "^| E88" $D/bench-$side/results.md | head -2; done
