#!/bin/bash
# session 17, call 5 (one GPU): the delta rules' chunked kernels (general and joint) at GDN_100m head shapes against
# float64 autograd of the PyTorch form, with today's launch settings (TF32 products, then exact fp32 as time allows)
R=$1
C=$(cat $R/.gpu_main/commit)
mkdir -p /tmp/r5 && cd $R
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a /tmp/r5/times.txt; }
pack() { (cd /tmp/r5 && tar czf $OUT/r.tgz . 2>/dev/null); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > /tmp/r5/device.txt; python3 -c "import torch,triton;print(torch.__version__, triton.__version__)" >> /tmp/r5/device.txt 2>&1
echo $C > /tmp/r5/commit.txt; date -u > /tmp/r5/date.txt
stamp "forms tf32"; timeout 200 python3 benchmarks/chunked_forms_check.py --forms delta joint --dots tf32 > /tmp/r5/forms-tf32.log 2>&1; stamp "rc=$?"; pack
stamp "forms ieee"; timeout 150 python3 benchmarks/chunked_forms_check.py --forms delta joint --dots ieee > /tmp/r5/forms-ieee.log 2>&1; stamp "rc=$?"; pack
cat /tmp/r5/times.txt /tmp/r5/forms-*.log
