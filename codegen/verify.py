"""``archdsl verify SPEC [--device cpu|cuda] [--dtype fp32|bf16]``: the compiled layer against the
reference on random inputs; one line per output and per gradient with its relative RMS error."""

from __future__ import annotations

import os
import sys

from archdsl import args as A
from archdsl.errors import ArchdslError
from archdsl.lang.check_cmd import parse_sets

TOLERANCE = {"fp32": 1e-5, "bf16": 2e-2, "fp16": 5e-3}


def add_arguments(p) -> None:
    p.add_argument("spec", help="a .rnn file or the name of a bundled spec")
    p.add_argument("--preset", help="a named configuration (default: the spec's defaults)")
    p.add_argument("--set", action="append", default=[], metavar="K=V", help="override a hyper or choice")
    p.add_argument(
        "--device",
        type=A.device,
        default=None,
        help="cpu (Triton's interpreter) or cuda (default: cuda if present)",
    )
    p.add_argument("--dtype", default="fp32", choices=sorted(TOLERANCE), help="precision of the kernels")
    p.add_argument("--batch", type=A.positive_int, default=2, help="sequences")
    p.add_argument("--seq", type=A.positive_int, default=17, help="sequence length T")
    p.add_argument(
        "--chunk", type=A.positive_int, help="steps per block (default: the strategy's; see archdsl compile)"
    )
    p.add_argument("--seed", type=A.nonnegative_int, default=0, help="seed of the weights and inputs")
    p.add_argument("--strategy", help="force an execution strategy (default: the first that applies)")
    A.add_products(p)


def run(args) -> int:
    if args.device == "cpu" or (args.device is None and not _cuda()):
        os.environ["TRITON_INTERPRET"] = "1"  # must be set before triton is imported
    import torch

    from archdsl.lang.checker import instantiate
    from archdsl.lang.parser import parse_file
    from archdsl.lang.specs_path import resolve_spec
    from archdsl.layer import RecurrentLayer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ArchdslError("--device cuda: no CUDA device is available")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    layer = instantiate(parse_file(resolve_spec(args.spec)), args.preset, parse_sets(args.set)).layer
    torch.manual_seed(args.seed)
    ref = RecurrentLayer(layer, seed=args.seed).to(device)
    options = {"chunk": args.chunk, "strategy": args.strategy, "products": args.products}
    ker = RecurrentLayer(layer, backend="triton", seed=args.seed, **options)
    ker = ker.to(device)
    ker.load_state_dict(ref.state_dict())
    B, T = args.batch, args.seq
    x = torch.randn(B, T, layer.dim, device=device)
    h0 = {
        s: 0.5 * torch.randn(B, *(layer.sizes[a] for a in ax), device=device)
        for s, ax in layer.states.items()
    }

    def run_model(model, cast):
        xx = x.to(cast).requires_grad_(True)
        hh = {k: v.clone().requires_grad_(True) for k, v in h0.items()}
        y, final = model.to(cast)(xx, hh)
        return [xx, *hh.values()], y.float(), final

    ins1, y1, f1 = run_model(ref, torch.float32)
    ins2, y2, f2 = run_model(ker, dtype)
    w = torch.randn_like(y1)
    # allow_unused: a spec whose update ignores a state (the checker warns) has no gradient to its h0
    g1 = torch.autograd.grad(
        (y1 * w).sum() + sum(v.sum() for v in f1.values()), [*ins1, *ref.parameters()], allow_unused=True
    )
    g2 = torch.autograd.grad(
        (y2 * w).sum() + sum(v.float().sum() for v in f2.values()),
        [*ins2, *ker.parameters()],
        allow_unused=True,
    )
    names = [
        "y",
        *(f"final {s}" for s in f1),
        "dx",
        *(f"dh0 {s}" for s in h0),
        *(f"d{n}" for n, _ in ref.named_parameters()),
    ]
    pairs = [(y2, y1), *((f2[s], f1[s]) for s in f1), *zip(g2, g1)]
    tol = TOLERANCE[args.dtype]
    print(f"{layer.name} on {device}, {args.dtype}, B={B} T={T} (tolerance {tol:.0e}, relative RMS error)")
    bad = 0
    for name, (a, b) in zip(names, pairs):
        if b is None:  # the reference's outputs do not depend on it: nothing to compare
            ok = a is None or not bool(a.float().abs().max() > 0)
            bad += not ok
            why = "no output depends on it (the state update ignores the state?)"
            print(f"  {'n/a ' if ok else 'FAIL'} {name:<28} not verified: {why}")
            continue
        a, b = (a if a is not None else torch.zeros_like(b)).float(), b.float()
        err = ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30)).item()
        ok = bool(torch.isfinite(a).all()) and err <= tol
        bad += not ok
        print(f"  {'ok  ' if ok else 'FAIL'} {name:<28} {err:.2e}")
    print(
        "verified" if not bad else f"{bad} tensor(s) outside tolerance",
        file=sys.stdout if not bad else sys.stderr,
    )
    return 0 if not bad else 1


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
