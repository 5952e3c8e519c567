"""Shared memory, registers and spills of the chunked kernels compiled for an H100 (sm_90a), on a
machine without a GPU: Triton compiles the kernel for that target and ptxas (bundled with Triton)
reports registers and spills of the PTX. The per-token backward kernels' throughput follows from
these: above about 114 KB of shared memory a program has the SM to itself (4 warps).

    python benchmarks/kernel_resources.py chunk_dqk_kernel --bk 32 --stages 1 3 --warps 4 8
    python benchmarks/kernel_resources.py chunk_dv_kernel --no-lowrank --bk 64
    python benchmarks/kernel_resources.py chunk_dmat_kernel chunk_dqkab_kernel --bk 64 --stages 1
    python benchmarks/kernel_resources.py _conv_bwd_walk _conv_bwd_halo --bt 16 32 --bc 64 128

GDN_100m / Mamba2_100m head shapes: chunk 64, value block 64, one decay per head, TF32 products, q/k
(a, b) bf16 in one layout (GatedDeltaNet's kernels as it runs them: ``--tied``); the walks
(states, dstates) take K and V (``--kv``, ``--v``) as constexprs, and without a correction
(``--no-lowrank``) a block of ``--bk`` key rows a program. The local Triton may differ from the GPU
machine's: compare settings within one run. GLA_100m's walks:

    python benchmarks/kernel_resources.py chunk_states_kernel chunk_dstates_kernel --no-lowrank \
        --per-channel --kv 128 --v 256 --bk 64 --bv 64 --stages 1 --warps 4 [--cumsum]

The short convolution's kernels (``codegen/run/shortconv.py``) at GDN_100m's q: x a bf16 slice of
the projection (channel stride 1, token stride a multiple of 16, as the GPU specialises them), dy
fp32, window 4 (``--window``), silu, ``--bt`` tokens and ``--bc`` channels a program.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile

import triton
from archdsl.codegen.run import chunked_backward, chunked_dqk, chunked_kernels, shortconv
from archdsl.codegen.run.chunked_common import interpreted
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

KERNELS = {
    name: getattr(mod, name)
    for mod, names in (
        (
            chunked_backward,
            ("chunk_dqk_kernel", "chunk_dv_kernel", "chunk_dqa_kernel", "chunk_dstates_kernel"),
        ),
        (chunked_kernels, ("chunk_prep_kernel", "chunk_states_kernel", "chunk_output_kernel")),
        (chunked_dqk, ("chunk_dmat_kernel", "chunk_dqkab_kernel")),
    )
    for name in names
}
CONV = {name: getattr(shortconv, name) for name in ("_conv_fwd", "_conv_bwd_walk", "_conv_bwd_halo")}
HALF = {"q", "k", "a", "b", "dq", "dk", "da", "db", "dv"}  # bf16 pointers; the rest fp32
#: the intermediates one kernel stores and others read that ``--store-half`` (LAUNCH["store_half"]) makes
#: bf16: the backward's, and without a correction the start states (``chunked_common.forward_store``)
STORED = {"dstates", "dr_in", "dr_out", "dmat"}


def signature(fn, consts: dict, half: set = HALF) -> tuple[dict, dict]:
    """(Triton signature, constexprs) of a kernel: i32 sizes and strides, bf16 pointers (``half``) or
    fp32."""
    sig, cx = {}, {}
    for i, n in enumerate(fn.arg_names):
        if n in consts:
            sig[n], cx[(i,)] = "constexpr", consts[n]
        elif n in ("T", "H", "K", "V") or (n[:1] == "s" and n[1:2] in "wqkvab" and n[2:].isdigit()):
            sig[n] = "i32"
        else:
            sig[n] = "*bf16" if n in half else "*fp32"
    return sig, cx


def conv_signature(fn, consts: dict) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attributes) of a convolution kernel as the GPU launch specialises it:
    channel strides 1, pointers, sizes and other strides divisible by 16."""
    sig, cx, attrs = {}, {}, {}
    for i, n in enumerate(fn.arg_names):
        if n in consts or n in ("sxc", "syc"):
            sig[n], cx[(i,)] = "constexpr", consts.get(n, 1)
            continue
        sig[n] = "i32" if n in ("T", "C", "L") or n[:1] == "s" else "*bf16" if n in ("x", "dx") else "*fp32"
        attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, cx, attrs


def ptxas_report(ptx: str) -> str:
    """ptxas -v's registers and spills of one PTX file (the bundled ptxas that accepts its version)."""
    bins = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        for exe in ("ptxas", "ptxas-blackwell"):
            r = subprocess.run(
                [os.path.join(bins, exe), "-arch=sm_90a", "-v", f.name, "-o", os.devnull],
                capture_output=True,
                text=True,
            )
            if r.returncode == 0:
                lines = (r.stdout + r.stderr).splitlines()
                keep = [
                    ln.split("info    :")[-1].strip() for ln in lines if "spill" in ln or "registers" in ln
                ]
                return "; ".join(keep)
        return "ptxas failed: " + (r.stdout + r.stderr).strip().splitlines()[-1]
    finally:
        os.unlink(f.name)


def report(name: str, consts: dict, warps: int, stages: int, maxnreg=None, half: set = HALF) -> str:
    fn = CONV.get(name) or KERNELS[name]
    compile_time = {fn.arg_names[i] for i in fn.constexprs}  # K and V: the walks' only
    consts = {k: v for k, v in consts.items() if k in compile_time or k not in ("K", "V")}
    consts = {k: v for k, v in consts.items() if k in fn.arg_names}
    sig, cx, attrs = conv_signature(fn, consts) if name in CONV else (*signature(fn, consts, half), None)
    k = triton.compile(
        ASTSource(fn, sig, constexprs=cx, attrs=attrs),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": warps, "num_stages": stages, "maxnreg": maxnreg},
    )
    return f"shared memory {k.metadata.shared} B; {ptxas_report(k.asm['ptx'])}"


def attempt(name: str, consts: dict, warps: int, stages: int, maxnreg=None, half: set = HALF) -> str:
    try:
        return report(name, consts, warps, stages, maxnreg, half)
    except Exception as e:  # a setting that does not compile: say so and go on
        return f"failed: {type(e).__name__}: {str(e)[:120]}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kernels", nargs="+", choices=[*KERNELS, *CONV])
    ap.add_argument(
        "--bk", type=int, nargs="*", default=[32], help="key block (the walks: the whole K with a correction)"
    )
    ap.add_argument("--bv", type=int, nargs="*", default=[64], help="value block")
    ap.add_argument(
        "--kv", type=int, default=128, help="key and value size where a kernel takes them as constexprs"
    )
    ap.add_argument("--v", type=int, help="value size where it differs from the key size (GLA: 2K)")
    ap.add_argument("--stages", type=int, nargs="*", default=[3])
    ap.add_argument("--warps", type=int, nargs="*", default=[4])
    ap.add_argument("--no-lowrank", action="store_true", help="no rank-one correction (Mamba2, GLA)")
    ap.add_argument(
        "--joint",
        action="store_true",
        help="the correction shares the write's key (JOINT: GatedDeltaNet, E88)",
    )
    ap.add_argument(
        "--tied", action="store_true", help="joint, and b one value a token (TIED: GatedDeltaNet's)"
    )
    ap.add_argument("--per-channel", action="store_true", help="a decay per key channel (GLA), not per head")
    ap.add_argument("--dot", default="tf32", choices=["tf32", "bf16", "ieee"], help="the products' type")
    ap.add_argument("--maxnreg", type=int, help="registers a thread at most (ptxas' .maxnreg; default: none)")
    ap.add_argument("--scan", action="store_true", help="chunk_dqk_kernel: the decay gradient by a scan")
    ap.add_argument(
        "--cumsum",
        action="store_true",
        help="the kernels read cumulative log-decays (CUM: LAUNCH['walk_cumsum'], LAUNCH['parallel_cumsum'])",
    )
    ap.add_argument(
        "--store-half", action="store_true", help="the stored intermediates in bf16 as LAUNCH['store_half']"
    )
    ap.add_argument("--bt", type=int, nargs="*", default=[32], help="convolution: tokens a program")
    ap.add_argument("--bc", type=int, nargs="*", default=[64], help="convolution: channels a program")
    ap.add_argument("--window", type=int, default=4, help="convolution: its window K")
    args = ap.parse_args()
    if interpreted():
        print("error: TRITON_INTERPRET is set: expected it unset (the kernels are compiled)", file=sys.stderr)
        sys.exit(2)
    for name, stages, warps, bt, bc in itertools.product(
        args.kernels, args.stages, args.warps, args.bt, args.bc
    ):
        if name in CONV:
            K = args.window
            consts = dict(K=K, KP=triton.next_power_of_2(K), HAS_BIAS=False, SILU=True, BT=bt, BC=bc)
            line = attempt(name, consts, warps, stages)
            print(f"{name} BT {bt} BC {bc} stages {stages} warps {warps}: {line}", flush=True)
    for name, bk, bv, stages, warps in itertools.product(
        args.kernels, args.bk, args.bv, args.stages, args.warps
    ):
        if name in CONV:
            continue
        consts = dict(
            C=64,
            K=args.kv,
            V=args.v or args.kv,
            BV=bv,
            BK=bk,
            SCALAR=not args.per_channel,
            DOT=args.dot,
            SHARED=True,
            LOWRANK=not args.no_lowrank,
            SCAN=args.scan,
            CUM=args.cumsum,
            JOINT=args.joint or args.tied,
            TIED=args.tied,
        )
        stored = STORED | ({"states"} if args.no_lowrank else set()) if args.store_half else set()
        line = attempt(name, consts, warps, stages, args.maxnreg, HALF | stored)
        cap = f" maxnreg {args.maxnreg}" if args.maxnreg else ""
        cap += " store_half" if args.store_half else ""
        print(f"{name} BK {bk} BV {bv} stages {stages} warps {warps}{cap}: {line}", flush=True)


if __name__ == "__main__":
    main()
