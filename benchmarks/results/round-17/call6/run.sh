#!/bin/bash
# session 17, call 6 (one GPU): gdn bf16 against the reference at chunks of 64 (chunked_check's case),
# the joint form, the general form on the same coefficients, 32-bit backward stores, and the base build c9e2468
R=$1
mkdir -p /tmp/r6 && cd $R
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/base $R/.gpu_main/base/*.whl || exit 1
cat $R/.gpu_main/commit > /tmp/r6/commit.txt; date -u > /tmp/r6/date.txt; nvidia-smi --query-gpu=name --format=csv > /tmp/r6/device.txt
pack() { (cd /tmp/r6 && tar czf $OUT/r.tgz . 2>/dev/null); }
timeout 70 python3 .gpu_main/acc.py 2>&1 | grep -v Warn | tee -a /tmp/r6/acc.log; pack
timeout 60 python3 .gpu_main/acc.py joint=0 2>&1 | grep -v Warn | tee -a /tmp/r6/acc.log; pack
timeout 60 python3 .gpu_main/acc.py store_half=0 2>&1 | grep -v Warn | tee -a /tmp/r6/acc.log; pack
PYTHONPATH=/tmp/base:$PYTHONPATH timeout 60 python3 .gpu_main/acc.py 2>&1 | grep -v Warn | sed 's/^/base /' | tee -a /tmp/r6/acc.log; pack
