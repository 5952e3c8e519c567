"""The chunked kernels alone at GDN_100m / Mamba2_100m head shapes: forward and forward+backward
time per launch setting (value block, key block of the backward's per-token kernels, warps, chunk).
Prints one line per setting (``--token-stages``/``--token-warps``: the backward's per-token kernels'
own; 0: the default); GPU only.

    python benchmarks/chunked_sweep.py
"""

from __future__ import annotations

import argparse
import itertools

import torch
from archdsl.codegen.run.chunked_backward import chunked_backward
from archdsl.codegen.run.chunked_common import LAUNCH
from archdsl.codegen.run.chunked_kernels import chunked_forward
from triton.testing import do_bench

SHAPES = {"gdn 8x128x128 delta": (8, 128, 128, True), "mamba2 28x64x64": (28, 64, 64, False)}


def profile(fn, label: str) -> None:
    """Each kernel's share of three calls of ``fn``."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
    print(f"profile: {label}", flush=True)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8), flush=True)


def main(B=32, T=512):
    args = argparse.ArgumentParser()
    args.add_argument("--bv", type=int, nargs="*", default=[32, 64, 128])
    args.add_argument("--bk", type=int, nargs="*", default=[0], help="0: the default rule")
    args.add_argument("--warps", type=int, nargs="*", default=[4])
    args.add_argument("--chunk", type=int, nargs="*", default=[32, 64])
    args.add_argument("--stages", type=int, nargs="*", default=[1])
    args.add_argument(
        "--token-stages", type=int, nargs="*", default=[0], help="the per-token kernels' stages (0: default)"
    )
    args.add_argument(
        "--token-warps", type=int, nargs="*", default=[0], help="the per-token kernels' warps (0: --warps)"
    )
    args.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    args.add_argument("--profile", action="store_true", help="print each kernel's time per setting")
    args.add_argument(
        "--dot",
        default="tf32",
        choices=["tf32", "bf16", "ieee"],
        help="the products' type (bf16: bf16 inputs)",
    )
    opts = args.parse_args()
    dev = "cuda"
    for name in opts.shapes:
        H, K, V, low = SHAPES[name]
        g = torch.Generator(device=dev).manual_seed(0)
        lw = -torch.rand(B, T, H, device=dev, generator=g) * 0.1
        q, k = (
            torch.nn.functional.normalize(torch.randn(B, T, H, K, device=dev, generator=g), dim=-1)
            for _ in "qk"
        )
        v = torch.randn(B, T, H, V, device=dev, generator=g)
        ab = [-0.5 * k, k] if low else []
        if opts.dot == "bf16":
            q, k, v, *ab = (x.bfloat16() for x in (q, k, v, *ab))
        h0 = torch.zeros(B, H, K, V, device=dev)
        do, dht = torch.randn(B, T, H, V, device=dev), torch.zeros_like(h0)
        args = (lw, q, k, v, ab, h0)
        grid = itertools.product(
            opts.bv, opts.bk, opts.warps, opts.chunk, opts.stages, opts.token_stages, opts.token_warps
        )
        for bv, bk, warps, chunk, stages, ts, tw in grid:
            LAUNCH.update(
                bv=bv,
                bk=bk or None,
                warps=warps,
                states_stages=stages,
                dstates_stages=stages,
                token_stages=ts or None,
                token_warps=tw or None,
            )
            label = (
                f"{name}: {opts.dot} bv {bv} bk {bk} warps {warps} C {chunk} stages {stages} "
                f"token stages {ts} token warps {tw}"
            )
            try:
                f = do_bench(lambda a=args, c=chunk: chunked_forward(*a, c, opts.dot), warmup=3, rep=20)
                b = do_bench(
                    lambda a=args, d=(do, dht), c=chunk: chunked_backward(*a, *d, c, opts.dot),
                    warmup=3,
                    rep=20,
                )
                print(f"{label}: fwd {f:.3f} ms, bwd {b:.3f} ms", flush=True)
                if opts.profile:
                    profile(lambda a=args, d=(do, dht), c=chunk: chunked_backward(*a, *d, c, opts.dot), label)
            except Exception as e:
                print(f"{label}: failed {type(e).__name__}: {str(e)[:100]}")


if __name__ == "__main__":
    main()
