#!/usr/bin/env bash
# The chunked strategy on one GPU in one call: correctness against the reference (chunked_check.py),
# the kernels alone per launch setting (chunked_sweep.py), and whole layers against the loop and the
# peers (chunked.py). Writes everything under $OUT; run from the repository root with archdsl, fla and
# mamba_ssm importable (see ../shared/device/README.md for the set-up used).
set -u
out=${OUT:-/tmp/out}
mkdir -p "$out"
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$out/env.txt" 2>&1
step() { local name=$1; shift; local t0=$SECONDS; "$@" > "$out/$name.txt" 2>&1; echo "$name: rc $? in $((SECONDS - t0)) s" >> "$out/steps.txt"; }
case " ${STEPS:-check sweep layers} " in *" check "*) step check python3 benchmarks/chunked_check.py;; esac
case " ${STEPS:-check sweep layers} " in *" sweep "*) step sweep python3 benchmarks/chunked_sweep.py;; esac
case " ${STEPS:-check sweep layers} " in *" layers "*) step layers python3 benchmarks/chunked.py \
  --chunk ${CHUNK:-64} ${PROFILE:+--profile} --out "$out/chunked.md";; esac
cat "$out/steps.txt"
