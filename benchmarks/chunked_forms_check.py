"""The chunked kernels of each linear form on the GPU against autograd of the PyTorch form in float64:
without a correction, a general delta rule (a, b and k three vectors) and a joint one (the correction
shares the write's key, ``LinearForm.joint``), at GDN_100m's head shapes (key and value 128), one
decay per head and one per key channel, fp32 inputs with exact products and TF32. The layer
benchmarks reach only the forms their specs have (every bundled delta rule is joint); this compiles
and checks the general one with today's launch settings too.

    python benchmarks/chunked_forms_check.py [--forms write delta joint] [--dots ieee tf32]
"""

from __future__ import annotations

import argparse

import torch
from archdsl.codegen.run.chunked_backward import chunked_backward
from archdsl.codegen.run.chunked_kernels import chunked_forward
from archdsl.codegen.run.chunked_torch import chunked_torch


def rel_rms(a, b) -> float:
    a, b = a.double(), b.double()
    return ((a - b).pow(2).mean().sqrt() / (b.pow(2).mean().sqrt() + 1e-300)).item()


def problem(form: str, scalar: bool, T: int, K: int, V: int, device: str):
    """Random coefficients in float64: vectors of norm about 1 (the corrections' about 0.3: a stable
    recurrence), log-decays in (-0.1, 0]."""
    g = torch.Generator().manual_seed(0)
    B, H = 2, 4

    def r(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(device)

    lw = -0.1 * torch.rand(B, T, H, *(() if scalar else (K,)), generator=g, dtype=torch.float64).to(device)
    n = {"write": 0, "delta": 2, "joint": 1}[form]
    ab = [r(B, T, H, K, scale=0.3 / K**0.5) for _ in range(n)]
    return lw, r(B, T, H, K, scale=K**-0.5), r(B, T, H, K, scale=K**-0.5), r(B, T, H, V), ab, r(B, H, K, V)


def check(form: str, scalar: bool, dot: str, chunk: int = 64, T=300, K=128, V=128, device="cuda") -> float:
    """The worst relative RMS error of o, the final state and every gradient."""
    lw, q, k, v, ab, h0 = problem(form, scalar, T, K, V, device)
    leaves = [x.clone().requires_grad_(True) for x in (lw, q, k, v, *ab, h0)]
    o, hT = chunked_torch(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4:-1], leaves[-1], chunk)
    do, dht = torch.randn_like(o), torch.randn_like(hT)
    want = [o, hT, *torch.autograd.grad([o, hT], leaves, [do, dht])]
    f = [x.float() for x in (lw, q, k, v, h0)]
    fab = [x.float() for x in ab]
    got = [*chunked_forward(*f[:4], fab, f[4], chunk, dot)]
    got += chunked_backward(*f[:4], fab, f[4], do.float(), dht.float(), chunk, dot)
    return max(rel_rms(g, w) for g, w in zip(got, want))


def main():
    ap = argparse.ArgumentParser()
    forms, dots = ["write", "delta", "joint"], ["ieee", "tf32"]
    ap.add_argument("--forms", nargs="*", default=forms, choices=forms)
    ap.add_argument("--dots", nargs="*", default=dots, choices=dots)
    args = ap.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    for form in args.forms:
        for scalar in (True, False):
            for dot in args.dots:
                decay = "head decay" if scalar else "key decay"
                worst = check(form, scalar, dot)
                print(f"{form:6} {decay:10} {dot:5}: worst rel-rms {worst:.1e}", flush=True)


if __name__ == "__main__":
    main()
