"""Name the first non-finite tensor when a training step produces a non-finite loss or gradient."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn


def tensors(obj) -> Iterator[torch.Tensor]:
    """Every floating tensor inside a (nested) tuple, list or dict."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from tensors(o)


def has_nonfinite(obj) -> bool:
    return any(not bool(torch.isfinite(t).all()) for t in tensors(obj))


def first_nonfinite(model: nn.Module, x: torch.Tensor, autocast) -> str:
    """A parameter or buffer that is already non-finite, else the first module (in the order the
    forward finishes them, so the innermost culprit) whose output is non-finite on input ``x``."""
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return f"{kind} '{name}'"
    found: list[str] = []

    def hook(name: str):
        def check(module, inputs, output):
            if not found and has_nonfinite(output):
                what = f"'{name}'" if name else "the whole model (the logits)"
                found.append(f"the output of {what} ({type(module).__name__})")

        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()]
    try:
        with torch.no_grad(), autocast:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else "none in the repeated forward: the loss itself overflowed"


def first_nonfinite_grad(model: nn.Module) -> str:
    """The first parameter (in module order) whose gradient is non-finite, and how many are."""
    bad = [
        n
        for n, p in model.named_parameters()
        if p.grad is not None and not bool(torch.isfinite(p.grad).all())
    ]
    if not bad:
        return "none among the parameters' gradients"
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return f"the gradient of parameter '{bad[0]}'{more}"


def diagnose(model: nn.Module, loss: float, norm: float, x: torch.Tensor, autocast, step: int) -> str:
    """The message for a step whose loss or gradient norm is not finite."""
    if math.isfinite(loss):
        what, where = f"non-finite gradient norm ({norm}) at step {step}", first_nonfinite_grad(model)
    else:
        what, where = f"non-finite loss ({loss}) at step {step}", first_nonfinite(model, x, autocast)
    return f"{what}; first non-finite tensor: {where}"
