"""A spec's short convolutions as one grouped ``conv1d`` each.

``conv[c](a, w)`` is sugar for ``sum[c](w * shift[c](a))``: the reference interpreter evaluates it as
written, materialising a window of C shifted copies of ``a`` ([B, T, *axes, C], in fp32) and its
product with ``w``, and autograd stores both for the backward. A layer's sequence values (the
per-token values that read earlier tokens, computed once per call before the recurrence) take this
path instead: the same sum as a depthwise causal convolution, one ``torch.nn.functional.conv1d`` with
a group per channel, whose backward is the library's as well. The result is the reference's to
rounding (tests/test_convolve.py), and the reference itself is unchanged.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import torch

from archdsl.ir import Graph, Op
from archdsl.reference import Layout


@dataclass(frozen=True)
class Conv:
    """``sum[axis](weight * shift[axis](signal))`` at node ``out``; ``inner``: the shift and the product,
    which no other node reads."""

    out: int
    signal: int
    weight: int
    axis: str
    inner: tuple[int, int]


def find_convs(graph: Graph, roots, time_free) -> list[Conv]:
    """The convolutions under ``roots`` whose window product and shift nothing else reads, and whose
    weight is a per-layer value (``time_free(node)``: it has no batch or time dimension)."""
    users = Counter(a for n in graph.nodes for a in n.args)
    found = []
    for i in sorted(graph.ancestors(roots)):
        n = graph[i]
        if n.op is not Op.SUM or graph[n.args[0]].op is not Op.MUL or users[n.args[0]] != 1:
            continue
        mul = n.args[0]
        for s, w in (graph[mul].args, graph[mul].args[::-1]):
            shifted = graph[s]
            if (
                shifted.op is Op.SHIFT
                and shifted.attr == n.attr
                and users[s] == 1
                and n.attr not in graph[shifted.args[0]].axes
                and time_free(w)
            ):
                found.append(Conv(i, shifted.args[0], w, n.attr, (s, mul)))
                break
    return found


def _broadcast(a, b) -> torch.Size:
    """The broadcast of two shapes. ``torch.broadcast_shapes`` does the same, but its first call
    imports SymPy (seconds of a process's first forward)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        raise ValueError(f"shapes {list(a)} and {list(b)} do not broadcast")
    return torch.Size(x if y == 1 else y for x, y in zip(a, b))


def depthwise_conv(
    a: torch.Tensor, w: torch.Tensor, layout: Layout, axis: str, bias=None, silu=False, kernel=False
) -> torch.Tensor:
    """``sum[axis](w * shift[axis](a))`` on full-layout tensors: ``a`` [*batch, T, *layout] (size 1 on
    ``axis``; any float type, computed in ``layout.dtype``), ``w`` [*layout] (no batch or time); the
    result as the reference's ``SUM`` gives it, plus ``bias`` [*layout] (size 1 on ``axis``, no channel
    beyond the convolution's) when given, through silu when ``silu``. ``kernel``: in fp32 on a GPU or
    under the Triton interpreter, by the Triton kernels of ``codegen/run/shortconv.py`` (one pass each
    way, ``a`` read in its own type and strides, the result contiguous per token).
    Window position k of ``shift`` holds the token C-1-k steps back, which is ``conv1d``'s
    cross-correlation over the input padded with C-1 zeros in front."""
    nb = a.dim() - len(layout.axes)
    d = layout.axes.index(axis)
    C = layout.layer.sizes[axis]
    at, wt = a.movedim(nb + d, -1), w.movedim(d, -1)  # the window axis last (size 1 in ``a``)
    channels = _broadcast(at.shape[nb:-1], wt.shape[:-1])
    batch, T = at.shape[: nb - 1], at.shape[nb - 1]
    x = at.expand(*at.shape[:nb], *channels, 1).reshape(-1, T, channels.numel()).transpose(1, 2)
    weight = wt.expand(*channels, C).reshape(channels.numel(), 1, C)
    if bias is not None:
        bias = bias.movedim(d, -1).expand(*channels, 1).reshape(-1).to(layout.dtype)
    if kernel and layout.dtype == torch.float32 and _kernels_run(a):
        from archdsl.codegen import short_conv

        y = short_conv(x.transpose(1, 2), weight.reshape(-1, C), bias, silu)
        return y.reshape(*batch, T, *channels, 1).movedim(-1, nb + d)
    x = x.to(layout.dtype)
    with torch.autocast(a.device.type, enabled=False):  # the reference's precision, not autocast's
        y = torch.nn.functional.conv1d(
            torch.nn.functional.pad(x, (C - 1, 0)), weight.to(x.dtype), bias, groups=channels.numel()
        )
    y = y.transpose(1, 2).reshape(*batch, T, *channels, 1).movedim(-1, nb + d)
    return torch.nn.functional.silu(y) if silu else y


def _kernels_run(a: torch.Tensor) -> bool:
    """Do Triton kernels run on ``a``: on a GPU, or on the CPU under the interpreter?"""
    return a.is_cuda or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
