#!/bin/bash
# session 24, call 4 (one GPU): the GPU tests of the tuner (candidates timed as CUDA graphs), then
# loop_ab at checkpoint stride 1 and at stride 16 with fla's chunked GDN, each side replayed as CUDA
# graphs (GPU time), every E88 benchmark shape and E75h4n32
R=$1
C=$(cat $R/.gpu_main/commit)
D=/tmp/s24d
mkdir -p $D /tmp/w24d && cd /tmp/w24d && ln -sfn $R/specs specs && ln -sfn $R/tests tests && ln -sfn $R/benchmarks benchmarks
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $D/times.txt; }
pack() { (cd $D && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $D/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> $D/device.txt 2>&1
echo "$C" > $D/commit.txt; date -u > $D/date.txt
stamp "gpu tests"; TRITON_INTERPRET=0 timeout 150 python3 -m pytest -m gpu tests/test_gpu.py -k "tuning or first_call or loop_keeping" -q -p no:cacheprovider > $D/gpu-tests.log 2>&1; stamp "gpu tests rc=$?"; pack
stamp "stride 1"; timeout 150 python3 benchmarks/loop_ab.py --label "stride 1 ($C)" --chunk 1 --graphs --out $D/stride1.md > $D/stride1.log 2>&1; stamp "stride 1 rc=$?"; pack
stamp "stride 16 + fla"; timeout 270 python3 benchmarks/loop_ab.py --label "stride 16 ($C)" --chunk 16 --fla --graphs --out $D/stride16.md > $D/stride16.log 2>&1; stamp "stride 16 rc=$?"; pack
cat $D/times.txt; tail -3 $D/gpu-tests.log; cat $D/stride1.md $D/stride16.md
