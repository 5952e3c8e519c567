"""Which projection outputs' bf16 rounding moves a spec's bf16 gradients? The spec's reference layer
on the oracle's inputs (benchmarks/oracle.py: weights rounded to bf16, x and the output weights from
seeds 1 and 2), per tensor, as relative RMS distance to the same layer in fp64:

- ``bf16``: the layer in bf16 (projections and their gradients in bf16, the rest in fp32);
- one column per group of projection outputs (``r+k``): the same, but those projections computed in
  fp64 (their outputs and the gradients flowing into them unrounded; their inputs still bf16);
  with ``:grad`` (``r+k:grad``), the gradients flowing into those outputs rounded to bf16 again, so
  the column shows the effect of rounding the values alone.

A column far below ``bf16`` names the values whose rounding the layer is sensitive to.

    python benchmarks/bf16_rounding.py rwkv6 --preset RWKV6_100m --groups r+k wz+wl v+g
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import archdsl.layer as layer_module
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer

ROOT = Path(__file__).resolve().parents[1]
LINEAR = torch.nn.functional.linear


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def run(ir, state, x, w, dtype, exact_keys=(), round_grads=False) -> dict[str, torch.Tensor]:
    """Output and every gradient of the reference layer in ``dtype``, the projections of
    ``exact_keys`` in fp64 (``round_grads``: the gradients into their outputs rounded to bf16)."""
    m = RecurrentLayer(ir, backend="reference", seed=0)
    m.load_state_dict(state)
    m = m.to(dtype)
    exact = {id(m.proj[k].weight) for k in exact_keys}

    def linear(src, weight, bias=None):
        if id(weight) not in exact:
            return LINEAR(src, weight, bias)
        out = LINEAR(src.double(), weight.double(), None if bias is None else bias.double())
        if round_grads:
            out.register_hook(lambda g: g.bfloat16().double())
        return out

    layer_module.nn.functional.linear = linear
    try:
        xx = x.to(dtype).requires_grad_(True)
        y, _ = m(xx)
        grads = torch.autograd.grad((y.double() * w).sum(), [xx, *m.parameters()])
    finally:
        layer_module.nn.functional.linear = LINEAR
    names = ["y", "dx", *(f"d{n}" for n, _ in m.named_parameters())]
    return dict(zip(names, [y.double(), *(g.double() for g in grads)]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--B", type=int, default=2)
    ap.add_argument("--T", type=int, default=128)
    ap.add_argument("--groups", nargs="*", default=[], help="projection outputs joined by +, e.g. r+k")
    args = ap.parse_args(argv)
    ir = instantiate(parse_file(ROOT / "specs" / f"{args.spec}.rnn"), args.preset).layer
    base = RecurrentLayer(ir, backend="reference", seed=0)
    with torch.no_grad():
        for p in base.parameters():
            p.copy_(p.bfloat16().float())
    key_of = {name: k for k, p in zip(base.proj_keys, ir.projections) for name, _ in p.outputs}
    x = torch.randn(args.B, args.T, ir.dim, generator=torch.Generator().manual_seed(1)).bfloat16().double()
    w = torch.randn(args.B, args.T, ir.dim, generator=torch.Generator().manual_seed(2)).double()
    state = base.state_dict()
    truth = run(ir, state, x, w, torch.float64)
    cols = {"bf16": ()} | {
        g: tuple(dict.fromkeys(key_of[n] for n in g.removesuffix(":grad").split("+"))) for g in args.groups
    }
    got = {c: run(ir, state, x, w, torch.bfloat16, keys, c.endswith(":grad")) for c, keys in cols.items()}
    print(f"{args.spec} {args.preset} B {args.B} T {args.T}: relative RMS distance to fp64")
    print("| tensor | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name in truth:
        print(f"| {name} | " + " | ".join(f"{rel_rms(got[c][name], truth[name]):.2e}" for c in cols) + " |")


if __name__ == "__main__":
    main()
