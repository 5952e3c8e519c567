"""The derived backward's shape: a value's cotangent contributions are added before they are reduced,
so a key-axis value read twice against a [key, value] state costs one sum over the value axis, not two
(each a full reduction a step in a loop kernel). The gradients themselves are checked against autograd
by tests/test_ops.py and the kernel harness."""

from __future__ import annotations

import torch
from op_oracles import layer_of, shim

from archdsl.autodiff import GRAD, derive_backward, extract_cell
from archdsl.ir import Op
from archdsl.reference import Layout, evaluate

# k is read twice against the [i, j] state: once in the delta rule's read, once in its write
TWICE = """rnn twice
hyper dim = 4
axis i = 3
axis j = 2
project x -> k[i], v[j]
state S[i, j]
r = sum[i](S * k)
S' = S + k * (v - r)
y = sum[i](S' * k)
output y
"""


def _sums_over(graph, first: int, axis: str) -> int:
    return sum(1 for n in graph.nodes[first:] if n.op is Op.SUM and n.attr == axis)


def test_contributions_are_added_before_one_reduction():
    cell = extract_cell(layer_of(TWICE))
    bwd = derive_backward(cell)
    # dk gets three [i, j] contributions (the read, the write, the readout): one sum over j for all
    assert _sums_over(bwd.graph, len(cell.graph), "j") == 1


def test_the_gradients_stay_autograds():
    cell = extract_cell(layer_of(TWICE))
    bwd = derive_backward(cell)
    gen = torch.Generator().manual_seed(0)
    shapes = {"S": (3, 2), "k": (3, 1), "v": (1, 2), "d:S": (3, 2), "d:y": (1, 2)}
    vals = {n: torch.randn(*s, generator=gen, dtype=torch.float64) for n, s in shapes.items()}
    lay = shim(bwd.graph, {"i": 3, "j": 2})
    outs = {"S": bwd.d_state["S"], "k": bwd.d_inputs["k"], "v": bwd.d_inputs["v"]}
    env = evaluate(
        lay,
        sorted(bwd.graph.ancestors(outs.values())),
        {},
        lambda i, n: vals[n.attr],
        Layout(lay, torch.float64),
    )
    xs = {n: vals[n].clone().requires_grad_(True) for n in ("S", "k", "v")}
    S, k, v = xs.values()
    S2 = S + k * (v - (S * k).sum(0, keepdim=True))
    y = (S2 * k).sum(0, keepdim=True)
    theirs = torch.autograd.grad([S2, y], list(xs.values()), [vals[GRAD + "S"], vals[GRAD + "y"]])
    for (name, node), want in zip(outs.items(), theirs):
        got = env[node].reshape(want.shape)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=name)
