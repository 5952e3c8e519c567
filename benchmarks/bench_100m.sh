#!/usr/bin/env bash
# Training evidence on one GPU (issue: the LM, baselines and fixed-time trainer): archdsl bench at a
# 100M budget, batch 32 x 512 bytes, 2 timed minutes each, E88 on its compiled Triton kernels next to
# Mamba2 and Gated DeltaNet. Run from the repository root with archdsl installed; writes to $DEST.
set -euo pipefail
DATA=${DATA:-../shared/data/corpus-train-1.txt.xz}
VAL=${VAL:-../shared/data/corpus-val.txt.xz}
DEST=${DEST:-benchmarks/results/bench-100M}
# fla 0.6 refuses GatedDeltaNet's backward on Hopper with triton < 3.7.1; benchmarks/cell_bench.py checks
# its gradients at the model's shapes (see its results file).
export ARCHDSL_FLA_TRITON_BWD=1
archdsl bench E88_d12h32 E88_h32n16 mamba2 fla-gdn --params 100M --align 128 --minutes 2 \
    --batch 32 --seq 512 --data "$DATA" --val "$VAL" --device cuda --backend triton --out "$DEST"
