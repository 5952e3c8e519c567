#!/bin/bash
# session 15, call 2 (H100): generated E88 modules timed in one process each shape (module_ab.py, best of
# three interleaved rounds): base 7b65a4b, ad b876fca (cotangents added before one reduction), chg 89e6cc5
# (and tanh from exp2), base2 (base again: the noise)
R=$1
mkdir -p /tmp/r3 && cd /tmp/r3 && cp $R/benchmarks/module_ab.py . && cp -r $R/.gpu_main/mods .
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > device.txt; date -u > date.txt
for s in d12h32t16w2 d12h32t8w1 h24n24t32w2 h32n16t16w1; do
  timeout 150 python3 module_ab.py mods/base_e88_$s.py mods/ad_e88_$s.py mods/chg_e88_$s.py mods/base2_e88_$s.py > ab-$s.md 2>ab-$s.err; echo "$s rc=$?" >> times.txt
  tar czf $OUT/r3.tgz . 2>/dev/null
done
cat times.txt; cat ab-*.md; tail -2 ab-*.err
