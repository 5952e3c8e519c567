#!/bin/bash
# session 15, call 1 (H100): the fused loop, base against change (cotangents added before one reduction;
# tanh from exp2 with a two-FMA series), every E88 shape and E75h4n32, autotuned and at fixed plans, with
# fla's chunked GDN in the same process as the base; then the GPU tests of every spec.
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sfn $R/specs specs && ln -sfn $R/tests tests && mkdir -p bench && cp $R/benchmarks/*.py bench/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/base $R/.gpu_main/base/*.whl || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r/device.txt; python3 -c "import torch,triton,fla;print(torch.__version__, triton.__version__, fla.__version__)" >> /tmp/r/device.txt 2>&1
echo $C > /tmp/r/commit.txt; date -u > /tmp/r/date.txt
pack() { (cd /tmp/r && tar czf $OUT/r.tgz . 2>/dev/null); }
T0=$(date +%s); stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a /tmp/r/times.txt; }
ab() {  # label, build (base|change), extra args
  local pp=$PYTHONPATH; [ $2 = base ] && pp=/tmp/base:$PYTHONPATH
  stamp "$1"; PYTHONPATH=$pp timeout 300 python3 bench/loop_ab.py --label "$1" --out /tmp/r/$1.md "${@:3}" > /tmp/r/$1.log 2>&1; stamp "$1 rc=$?"; pack
}
FIXED=E88_d12h32:16:2,E88_h32n16:16:1,E88_h24n24:32:2,E88_h8n64:16:1,E75h4n32:8:1
ab base base --fla
ab change change
ab fixed-change-1 change --shapes $FIXED
ab fixed-base-1 base --shapes $FIXED

stamp "gpu tests"; TRITON_INTERPRET=0 timeout 120 python3 -m pytest -m gpu tests/test_gpu.py -k "every_spec or fused_loop" -q -p no:cacheprovider > /tmp/r/gpu-tests.log 2>&1; stamp "gpu tests rc=$?"; pack
cat /tmp/r/times.txt; for f in base change fixed-change-1 fixed-base-1; do cat /tmp/r/$f.md; done; tail -3 /tmp/r/gpu-tests.log
