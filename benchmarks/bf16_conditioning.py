"""Is a bf16 harness failure the kernel's or the spec's? For one spec and shape, three distances:

- kernel (bf16) against the reference (bf16): what the harness checks;
- the reference in bf16 against the reference in fp32 on the same fp32 weights and input: how much
  bf16 inputs alone move the result (the spec's conditioning);
- kernel (bf16) against the reference in fp32.

If the kernel's distance to the fp32 reference is no larger than the bf16 reference's own, the kernel
adds no error of its own and a failure of the 2e-2 tolerance measures the spec, not the kernel.

    python benchmarks/bf16_conditioning.py benchmarks/specs/mlstm_like.rnn --B 4 --T 256 --device cuda
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from kernel_harness import rel_rms  # noqa: E402

from archdsl.lang.checker import instantiate  # noqa: E402
from archdsl.lang.parser import parse_file  # noqa: E402
from archdsl.lang.specs_path import resolve_spec  # noqa: E402
from archdsl.layer import RecurrentLayer  # noqa: E402


def run(model, x, dtype):
    model = model.to(dtype)
    xx = x.to(dtype).requires_grad_(True)
    y, _ = model(xx)
    w = torch.linspace(-1, 1, y.numel(), device=x.device).view_as(y)
    grads = torch.autograd.grad((y.float() * w).sum(), [xx, *model.parameters()])
    names = ["y", "dx", *(f"d{n}" for n, _ in model.named_parameters())]
    return dict(zip(names, [y.float(), *(g.float() for g in grads)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    layer = instantiate(parse_file(resolve_spec(args.spec))).layer
    torch.manual_seed(0)
    x = torch.randn(args.B, args.T, layer.dim, device=args.device)

    def fresh(backend):
        opts = {"chunk": 16, "tile": None, "num_warps": 1} if backend == "triton" else {}
        return RecurrentLayer(layer, backend=backend, seed=0, **opts).to(args.device)

    ref32 = run(fresh("reference"), x, torch.float32)
    ref16 = run(fresh("reference"), x, torch.bfloat16)
    ker16 = run(fresh("triton"), x, torch.bfloat16)
    print(f"{layer.name} B {args.B} T {args.T} on {args.device}: relative RMS distances")
    print(
        "| tensor | kernel bf16 vs reference bf16 | reference bf16 vs fp32 | kernel bf16 vs reference fp32 |"
    )
    print("|---|---|---|---|")
    for name in ref32:
        a, b, c = (
            rel_rms(ker16[name], ref16[name]),
            rel_rms(ref16[name], ref32[name]),
            rel_rms(ker16[name], ref32[name]),
        )
        print(f"| {name} | {a:.2e} | {b:.2e} | {c:.2e} |")


if __name__ == "__main__":
    main()
