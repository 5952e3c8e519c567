#!/usr/bin/env bash
# The chunked kernels of two builds in one call: the same sweep (benchmarks/chunked_sweep.py) under
# the build installed at $BASE_SITE (before a change) and under the one on PYTHONPATH (after it).
#   BASE_SITE=/tmp/base_site OUT=/tmp/out bash benchmarks/chunked_ab.sh --bv 64 --chunk 32 --warps 4 8
# Writes $OUT/ab-base.txt and $OUT/ab-new.txt; run from outside the repository so that the installed
# packages, not the checkout, are imported (the sweep's path is taken from this script's location).
set -u
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
PYTHONPATH=$BASE_SITE python3 "$here/chunked_sweep.py" "$@" > "$out/ab-base.txt" 2>&1
python3 "$here/chunked_sweep.py" "$@" > "$out/ab-new.txt" 2>&1
paste -d'\n' "$out/ab-base.txt" "$out/ab-new.txt" | grep -v '^$'
