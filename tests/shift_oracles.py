"""Oracles of the ops that read other tokens, ``SHIFT`` and its transpose ``UNSHIFT`` (tests/test_ops.py's
rows): their VJPs against torch autograd, the reference against torch's own causal ``conv1d`` and
``pad``, and a compiled layer that convolves and shifts against the reference layer.

A value here is [B, T, *axes]: time is the last batch dimension, as in ``RecurrentLayer.project``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from op_oracles import layer_of, shim

from archdsl.autodiff import GRAD, derive_token_backward
from archdsl.ir import Graph, Node, Op
from archdsl.reference import Layout, apply, evaluate

B, T, N, C = 2, 6, 3, 4
SIZES = {"i": N, "c": C}
#: (op, attr, argument axes, result axes)
CASES = [
    (Op.SHIFT, None, ("i",), ("i",)),
    (Op.SHIFT, "c", ("i",), ("i", "c")),
    (Op.UNSHIFT, None, ("i",), ("i",)),
    (Op.UNSHIFT, "c", ("i", "c"), ("i",)),
]


def torch_window(a: torch.Tensor) -> torch.Tensor:
    """[B, T, N] -> [B, T, N, C]: position k holds the token C-1-k steps back (zeros before the start)."""
    padded = F.pad(a, (0, 0, C - 1, 0))
    return torch.stack([padded[:, k : k + a.shape[1]] for k in range(C)], dim=-1)


def torch_op(op: Op, attr, a: torch.Tensor) -> torch.Tensor:
    """The op in plain torch: SHIFT by padding, UNSHIFT as the autograd transpose of SHIFT."""
    if op is Op.SHIFT:
        return torch_window(a) if attr else F.pad(a, (0, 0, 1, 0))[:, :-1]
    shape = (*a.shape[:2], N, C) if attr else a.shape
    probe = torch.zeros(*a.shape[:2], N, dtype=a.dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(torch_op(Op.SHIFT, attr, probe), probe, a.reshape(shape), create_graph=True)
    return grad


def _graph(op, attr, arg_axes, axes):
    g = Graph()
    a = g.add(Node(Op.INPUT, (), arg_axes, "a"))
    return g, g.add(Node(op, (a,), axes, attr))


def reference_op(op, attr, arg_axes, axes, a: torch.Tensor) -> torch.Tensor:
    g, z = _graph(op, attr, arg_axes, axes)
    layout = Layout(shim(g, SIZES), torch.float64)
    out = apply(g[z], [layout.full(a, arg_axes, 2)], layout)
    return layout.compact(out, axes, (B, T))


def derived_vjp(op, attr, arg_axes, axes, a: torch.Tensor, dz: torch.Tensor) -> torch.Tensor:
    g, z = _graph(op, attr, arg_axes, axes)
    bwd = derive_token_backward(g, tuple(SIZES), {"z": z}, {"a": arg_axes}, {})
    lay = shim(bwd.graph, SIZES)
    layout = Layout(lay, torch.float64)
    feed = {"a": (a, arg_axes), GRAD + "z": (dz, axes)}
    env = evaluate(
        lay,
        sorted(bwd.graph.ancestors([bwd.d_inputs["a"]])),
        {},
        lambda i, n: layout.full(feed[n.attr][0], feed[n.attr][1], 2),
        layout,
    )
    return layout.compact(env[bwd.d_inputs["a"]], arg_axes, (B, T))


def random(axes, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, *(SIZES[a] for a in axes), generator=gen, dtype=torch.float64)


def check_vjps() -> None:
    for op, attr, arg_axes, axes in CASES:
        a, dz = random(arg_axes, 0), random(axes, 1)
        x = a.clone().requires_grad_(True)
        (want,) = torch.autograd.grad(torch_op(op, attr, x), x, dz)
        got = derived_vjp(op, attr, arg_axes, axes, a, dz)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=f"{op} {attr}")


def check_reference() -> None:
    """SHIFT[c] then a weighted sum over c is torch's causal depthwise conv1d; the rest as torch_op."""
    for op, attr, arg_axes, axes in CASES:
        a = random(arg_axes, 2)
        torch.testing.assert_close(reference_op(op, attr, arg_axes, axes, a), torch_op(op, attr, a))
    a, w = random(("i",), 3), torch.randn(N, C, dtype=torch.float64)
    ours = (reference_op(Op.SHIFT, "c", ("i",), ("i", "c"), a) * w).sum(-1)
    theirs = F.conv1d(a.transpose(1, 2), w[:, None, :], padding=C - 1, groups=N)[..., :T].transpose(1, 2)
    torch.testing.assert_close(ours, theirs)
    # a sequence shorter than the window
    short = a[:, :2]
    got = Layout(shim(Graph(), SIZES), torch.float64)
    node = Node(Op.SHIFT, (0,), ("i", "c"), "c")
    out = got.compact(apply(node, [got.full(short, ("i",), 2)], got), ("i", "c"), (B, 2))
    torch.testing.assert_close(out, torch_window(short))


SPEC = """rnn shifts
hyper dim = 5
axis i = 3
axis c = 4
project x -> u[i], r[i]
param w[i, c] = uniform(-0.5, 0.5)
param b[i] = 0.1
uc = silu(conv[c](u, w) + b)       # a depthwise causal convolution with a bias
rs = r + 0.5 * (shift(r) - r)      # a token shift
state h[i]
h' = sigmoid(rs) * h + uc
y = h' * rs
output y
"""


def shift_layer():
    return layer_of(SPEC, "shifts.rnn")
