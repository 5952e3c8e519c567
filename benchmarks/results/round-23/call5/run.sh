#!/bin/bash
# session 23, call 5 (one GPU): the GPU tests of generate's CUDA graphs at the final build (fp32, bf16
# autocast with its cast cache on), and the decode tests beside them
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s23e
mkdir -p $D /tmp/w23e && cd /tmp/w23e && ln -sfn $R/specs specs && ln -sfn $R/tests tests
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
echo "$C" > $D/commit.txt; date -u > $D/date.txt
stamp "gpu tests"; TRITON_INTERPRET=0 timeout 300 python3 -m pytest -m gpu tests/test_gpu.py -k "generate or first_call" -q -p no:cacheprovider > $D/gpu-tests.log 2>&1; stamp "gpu tests rc=$?"; pack
cat $D/times.txt; tail -4 $D/gpu-tests.log
