"""Initialisers of learned parameters: a spec's init expression evaluated to a tensor."""

from __future__ import annotations

import math

import torch

from archdsl.errors import ArchdslError
from archdsl.lang import spec as S

_ELEMENTWISE = {
    "log": torch.log,
    "exp": torch.exp,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "sqrt": torch.sqrt,
    "logit": torch.logit,
    "softplus_inv": lambda t: t + torch.log(-torch.expm1(-t)),  # log(exp(t) - 1), stable
}


def initialise(
    expr: S.Expr | None,
    shape: tuple[int, ...],
    axes: tuple[str, ...],
    numbers: dict,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A float32 tensor of ``shape`` from an init expression (None: xavier-uniform)."""

    def scalar(e) -> float:  # a gain or an end point: on the CPU even while building on "meta"
        with torch.device("cpu"):
            return float(initialise(e, (), (), numbers))

    def ev(e) -> torch.Tensor:
        match e:
            case None:
                return ev(S.Call("xavier", None, (), None))
            case S.Num(value=v):
                return torch.full(shape, float(v))
            case S.Ref(name=n):
                return torch.full(shape, float(numbers[n]))
            case S.Neg(arg=a):
                return -ev(a)
            case S.BinOp(op=op, left=l, right=r):
                a, b = ev(l), ev(r)
                out = (
                    {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
                    if op in "+-*/"
                    else (a // b if op == "//" else a % b)
                )
                return _finite(out, (a, b), f"'{op}'", e)
            case S.Call(func=f, args=args, axes=ax):
                vals = [ev(a) for a in args]
                t = torch.empty(shape)
                if f == "zeros":
                    return t.zero_()
                if f == "ones":
                    return t.fill_(1.0)
                if f == "normal":
                    return t.normal_(0, 1, generator=generator) * vals[1] + vals[0]
                if f == "uniform":
                    return vals[0] + (vals[1] - vals[0]) * t.uniform_(0, 1, generator=generator)
                if f == "loguniform":
                    lo, hi = torch.log(vals[0]), torch.log(vals[1])
                    return torch.exp(lo + (hi - lo) * t.uniform_(0, 1, generator=generator))
                if f == "xavier":
                    return torch.nn.init.xavier_uniform_(t, generator=generator)
                if f == "orthogonal":
                    return _orthogonal(shape, args, scalar, generator)
                if f == "linspace":
                    k = axes.index(ax[0])
                    lo, hi = scalar(args[0]), scalar(args[1])
                    line = torch.linspace(lo, hi, shape[k])
                    view = [1] * len(shape)
                    view[k] = shape[k]
                    return line.reshape(view).expand(shape).clone()
                return _finite(_ELEMENTWISE[f](vals[0]), vals, f"'{f}'", e)
        raise AssertionError(e)

    with torch.no_grad():
        return ev(expr).float().contiguous()


def _orthogonal(shape, args, scalar, generator) -> torch.Tensor:
    """``orthogonal(gain)``: a random orthogonal matrix (orthonormal rows or columns) times gain.
    ``orthogonal(gain, K)``: the first row block of one for a (K * rows, cols) matrix, so that K such
    parameters are each distributed as one gate of torch's ``orthogonal_`` on a stacked weight
    (``nn.LSTM``'s ``weight_hh``); the blocks are drawn independently."""
    blocks = int(scalar(args[1])) if len(args) > 1 else 1
    full = torch.empty(blocks * shape[0], *shape[1:])
    torch.nn.init.orthogonal_(full, gain=scalar(args[0]), generator=generator)
    return full[: shape[0]].clone()


def _finite(out: torch.Tensor, args, what: str, e) -> torch.Tensor:
    """An initial value that is NaN or infinite trains nothing: say which function made it, and from what."""
    if out.device.type == "meta" or torch.isfinite(out).all():
        return out
    if not all(torch.isfinite(a).all() for a in args):  # not made here: the inner call says why
        return out
    bad = int((~torch.isfinite(out)).sum())
    lo, hi = (min(float(a.min()) for a in args), max(float(a.max()) for a in args)) if args else (0, 0)
    raise ArchdslError(
        f"the initialiser's {what} yields NaN or infinity at {bad} of {out.numel()} entries "
        f"(its arguments range over {lo:g} .. {hi:g}, outside its domain)",
        getattr(e, "span", None),
    )


def xavier_bound(fan_in: int, fan_out: int) -> float:
    return math.sqrt(6.0 / (fan_in + fan_out))
