#!/bin/bash
R=$1
mkdir -p /tmp/r /tmp/w && cd /tmp/w && ln -sf $R/specs specs && mkdir -p bench && cp $R/benchmarks/*.py bench/
nvidia-smi --query-gpu=name,driver_version --format=csv > /tmp/r/device.txt; cat $R/.gpu_main/commit > /tmp/r/commit.txt
timeout 230 python3 bench/leftovers.py --specs gla:GLA_100m gdn:GDN_100m retnet:RetNet_100m --B 8 --T 512 > /tmp/r/leftovers.txt 2> /tmp/r/leftovers.log
echo rc=$? >> /tmp/r/leftovers.txt
cd /tmp/r && tar czf $OUT/r.tgz .
cat /tmp/r/leftovers.txt
