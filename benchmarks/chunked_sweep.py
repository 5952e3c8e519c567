"""The chunked kernels alone at GDN_100m / Mamba2_100m head shapes: forward and forward+backward
time per launch setting (value block, warps, chunk). Prints one line per setting; GPU only.

    python benchmarks/chunked_sweep.py
"""

from __future__ import annotations

import itertools

import torch
from archdsl.codegen import chunked_kernels as ck
from archdsl.codegen.chunked_backward import chunked_backward
from triton.testing import do_bench

SHAPES = {"gdn 8x128x128 delta": (8, 128, 128, True), "mamba2 28x64x64": (28, 64, 64, False)}


def main(B=32, T=512):
    dev = "cuda"
    for name, (H, K, V, low) in SHAPES.items():
        g = torch.Generator(device=dev).manual_seed(0)
        lw = -torch.rand(B, T, H, device=dev, generator=g) * 0.1
        q, k = (
            torch.nn.functional.normalize(torch.randn(B, T, H, K, device=dev, generator=g), dim=-1)
            for _ in "qk"
        )
        v = torch.randn(B, T, H, V, device=dev, generator=g)
        ab = [-0.5 * k, k] if low else []
        h0 = torch.zeros(B, H, K, V, device=dev)
        do, dht = torch.randn(B, T, H, V, device=dev), torch.zeros_like(h0)
        args = (lw, q, k, v, ab, h0)
        for bv, warps, chunk in itertools.product((16, 32, 64), (4, 8), (32, 64)):
            ck.LAUNCH.update(bv=bv, warps=warps)
            try:
                f = do_bench(lambda a=args, c=chunk: ck.chunked_forward(*a, c, False), warmup=3, rep=20)
                b = do_bench(
                    lambda a=args, d=(do, dht), c=chunk: chunked_backward(*a, *d, c, False), warmup=3, rep=20
                )
                print(f"{name}: bv {bv} warps {warps} C {chunk}: fwd {f:.3f} ms, bwd {b:.3f} ms", flush=True)
            except Exception as e:
                print(f"{name}: bv {bv} warps {warps} C {chunk}: failed {type(e).__name__}: {str(e)[:100]}")


if __name__ == "__main__":
    main()
