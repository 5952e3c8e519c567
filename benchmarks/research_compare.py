"""The bundled specs against the research layers they name, numerically (float64, CPU, tiny sizes).

    python benchmarks/research_compare.py --research PATH [--research-commit HASH] [--seed 0]

PATH is a checkout of the public research code (github.com/ekg/elman). Its layers are imported from
PATH at run time and nothing of it is copied here. For each case this builds the research layer and
the archdsl spec at the research-default choices, nudges every research weight by N(0, 0.1^2) (so
that a constant initialisation, a zero output map or a unit bias, cannot hide a wrong mapping),
copies the weights into the spec's layer, and compares the output, the input gradient and every
weight gradient (relative: max |archdsl - research| / max |research|), and the parameter counts.
Spectral norms start both sides from the same power-iteration vector. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from research_cases import CASES, Case, same  # noqa: E402

from archdsl.lang.checker import instantiate  # noqa: E402
from archdsl.lang.parser import parse_file  # noqa: E402
from archdsl.layer import RecurrentLayer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
B, T = 2, 5
TOLERANCE = 1e-12


def spec_layer(case: Case) -> RecurrentLayer:
    inst = instantiate(parse_file(ROOT / "specs" / f"{case.spec}.rnn"), overrides=case.sets)
    return RecurrentLayer(inst.layer, seed=0, **case.layer_options).double().eval()


def views(m: RecurrentLayer) -> dict[str, tuple[torch.nn.Parameter, slice | None]]:
    """'param:NAME', 'proj:OUT', 'bias:OUT' and 'out' -> (the tensor, the rows of it)."""
    out = {f"param:{name}": (p, None) for name, p in m.params.items()}
    for k, p in enumerate(m.ir.projections):
        lin, start = m.proj[str(k)], 0
        for name, axes in p.outputs:
            rows = slice(start, start + m.ir.numel(axes))
            out[f"proj:{name}"] = (lin.weight, rows)
            if p.bias:
                out[f"bias:{name}"] = (lin.bias, rows)
            start = rows.stop
    out["out"] = (m.out.weight, None)
    return out


def pieces(m: RecurrentLayer, targets: list[str], grad: bool) -> list[torch.Tensor]:
    table = views(m)
    got = []
    for t in targets:
        p, rows = table[t]
        v = p.grad if grad else p
        v = torch.zeros_like(p) if v is None else v
        got.append(v if rows is None else v[rows])
    return got


def copy_weights(case: Case, research, m: RecurrentLayer) -> None:
    named = dict(research.named_parameters())
    with torch.no_grad():
        for name, targets, fn in case.mapping:
            value = fn(named[name].detach())
            start = 0
            for dst in pieces(m, targets, grad=False):
                n = dst.shape[0] if dst.dim() else 1
                dst.copy_(value[start : start + n].reshape(dst.shape) if dst.dim() else value.reshape(()))
                start += n
            assert start == (value.shape[0] if value.dim() else 1), (case.name, name, start, value.shape)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)


def align_spectral_norms(case: Case, research, m: RecurrentLayer, gen) -> None:
    """The same starting power-iteration vector on both sides."""
    norms = [*m.sn.values(), *m.proj_sn.values()]
    assert len(norms) == len(case.sn_vectors), (case.name, len(norms))
    for sn, attr in zip(norms, case.sn_vectors):
        u = torch.randn(sn.u.shape[0], generator=gen, dtype=torch.float64)
        u = u / u.norm()
        sn.u = u.clone()
        owner, name = attr.rsplit(".", 1) if "." in attr else ("", attr)
        setattr(research.get_submodule(owner), name, u.clone())


def compare(case: Case, seed: int) -> dict:
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # research modules print on construction
        research = case.build().double().train()
    m = spec_layer(case).train()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in research.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        case.fix(research)
    copy_weights(case, research, m)
    align_spectral_norms(case, research, m, gen)
    x = torch.randn(B, T, m.ir.dim, generator=gen, dtype=torch.float64)
    w = torch.randn(B, T, m.ir.dim, generator=gen, dtype=torch.float64)
    xr, xa = x.clone().requires_grad_(), x.clone().requires_grad_()
    # the research's PyTorch loops write some states in place (E10's m[i] = ...); a copy of every tensor
    # saved for backward, taken when it is saved, makes them differentiable without changing the math
    with contextlib.redirect_stdout(io.StringIO()), case.context():
        with torch.autograd.graph.saved_tensors_hooks(torch.clone, same):
            yr = case.run(research, xr)
        (yr * w).sum().backward()
    ya, _ = m(xa)
    (ya * w).sum().backward()
    named = dict(research.named_parameters())
    weights = {}
    for name, targets, fn in case.mapping:
        if name in case.no_grad:
            continue
        g = named[name].grad
        ref = fn(torch.zeros_like(named[name]) if g is None else g)
        ours = torch.cat([t.reshape(-1) for t in pieces(m, targets, grad=True)])
        weights[name] = rel(ours, ref.reshape(-1))
    mapped = {name for name, _, _ in case.mapping}
    unmapped = {n: bool(p.grad is not None and p.grad.any()) for n, p in named.items() if n not in mapped}
    return {
        "unmapped": unmapped,  # research parameters with no counterpart -> whether they got a gradient
        "output": rel(ya.detach(), yr.detach()),
        "dx": rel(xa.grad, xr.grad),
        "weights": weights,
        "params": (sum(p.numel() for p in m.parameters()), sum(p.numel() for p in research.parameters())),
    }


def git_commit(path: Path) -> str:
    r = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--short=8", "HEAD"], capture_output=True, text=True
    )
    return r.stdout.strip() if r.returncode == 0 else "unknown"


def report(results: list[tuple[Case, dict]], args) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# The bundled specs against the research layers",
        "",
        f"- date: {now}",
        f"- command: `python benchmarks/research_compare.py --research PATH --research-commit "
        f"{args.research_commit} --seed {args.seed}`",
        f"- archdsl commit: {git_commit(ROOT)}; research code: ekg/elman at {args.research_commit}",
        f"- float64 on the CPU, B = {B}, T = {T}; every research weight nudged by N(0, 0.1^2), then "
        "copied; relative error = max |archdsl - research| / max |research|",
        "",
        "| case | research layer | spec, choices | output | input grad | worst weight grad "
        "| params (archdsl / research) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, r in results:
        worst = max(r["weights"].values(), default=0.0)
        errs = [r["output"], r["dx"], worst]
        ours, theirs = r["params"]
        equal = (
            max(errs) <= TOLERANCE and (ours == theirs or case.count_note) and not any(r["unmapped"].values())
        )
        verdict = "equal" if equal else "DIFFERS"
        if case.control:
            verdict = "differs, as a control should" if not equal else "EQUAL: the control failed"
        if case.note:
            verdict += f" ({case.note})"
        sets = ", ".join(f"{k}={v}" for k, v in case.sets.items())
        if r["unmapped"]:
            moved = [n for n, g in r["unmapped"].items() if g]
            verdict += f"; no counterpart: {', '.join(r['unmapped'])}, gradient " + (
                f"NONZERO for {', '.join(moved)}" if moved else "zero"
            )
        lines.append(
            f"| {case.name} | {case.research} | {case.spec} {sets} | {r['output']:.1e} | {r['dx']:.1e} | "
            f"{worst:.1e} | {ours} / {theirs}{' ' + case.count_note if ours != theirs else ''} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--research", required=True, type=Path, help="a checkout of github.com/ekg/elman")
    ap.add_argument("--research-commit", default=None, help="the checkout's commit (default: git rev-parse)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-k", default="", help="only the cases whose name contains this")
    args = ap.parse_args(argv)
    if not (args.research / "elman" / "models").is_dir():
        print(
            f"error: --research {args.research}: expected a checkout of ekg/elman, found no elman/models/",
            file=sys.stderr,
        )
        return 2
    args.research_commit = args.research_commit or git_commit(args.research)
    sys.path.insert(0, str(args.research.resolve()))
    torch.set_default_dtype(torch.float64)
    results = []
    for case in CASES:
        if args.k in case.name:
            print(f"{case.name} ...", file=sys.stderr)
            results.append((case, compare(case, args.seed)))
    print(report(results, args), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
