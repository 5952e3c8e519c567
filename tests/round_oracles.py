"""``rounded(a)``: a value rounded to the layer's 16-bit type, as a library computing in that type
stores it (RWKV-6's token-shift lerps, RetNet's rotary tables). Its three oracles: the derived VJP
(the cotangent rounded alike) against autograd through the two casts, the reference against torch's
casts in each storage type and the rule that picks the type, and a compiled layer against the
reference, in fp32 (the identity) and in bf16 (where it rounds)."""

from __future__ import annotations

import torch
from kernel_harness import compare_backends
from op_oracles import autograd_vjp, derived_vjp, fill, layer_of, reference_apply

from archdsl.ir import Node, Op
from archdsl.layer import RecurrentLayer
from archdsl.reference import storage_dtype

#: values no 16-bit type holds exactly (thirds, sevenths) beside ones it does
VALUES = [1 / 3, -2 / 7, 0.1, 1.0, -0.5, 1e-3 / 3, 300.7, -1 / 9, 0.0, 5 / 3, 2.5, -7 / 3, 0.2, 1e4 / 3, 0.3]

SPEC = """rnn rounding
hyper dim = 6
axis i = 3
project x -> u[i], k[i]
dx = rounded(shift(u) - u)
a = rounded(u + rounded(dx * k))
state h[i]
h' = 0.5 * h + a * k
y = h' * k
output y
"""


def check_vjp() -> None:
    x = fill(VALUES, (5, 3))
    dz = fill(VALUES[::-1], (5, 3), offset=2)
    for storage in (torch.bfloat16, torch.float16):
        ours = derived_vjp(
            {"i": 5, "j": 3},
            {"x": ("i", "j")},
            lambda g, ids: g.add(Node(Op.ROUND, (ids["x"],), ("i", "j"))),
            {"x": x},
            dz,
            storage=storage,
        )
        theirs = autograd_vjp(lambda a, s=storage: a.to(s).to(a.dtype), {"a": x}, dz)
        assert ours["x"].dtype == storage
        torch.testing.assert_close(ours["x"].double(), theirs["a"], rtol=0, atol=0)
        assert not torch.equal(ours["x"].double(), dz), "the cotangent was not rounded"
    same = derived_vjp({"i": 5}, {"x": ("i",)}, lambda g, ids: g.add(Node(Op.ROUND, (ids["x"],), ("i",))),
                       {"x": x[:, 0]}, dz[:, 0])  # fmt: skip
    torch.testing.assert_close(same["x"], dz[:, 0], rtol=0, atol=0)  # fp64: no rounding


def check_reference() -> None:
    x = fill(VALUES, (5, 3))
    node = Node(Op.ROUND, (0,), ("i", "j"))
    for storage in (torch.bfloat16, torch.float16):
        got = reference_apply(node, {"i": 5, "j": 3}, [(x, ("i", "j"))], storage=storage)
        assert got.dtype == storage  # held in the storage type: a kernel reads half the bytes
        torch.testing.assert_close(got, x.float().to(storage), rtol=0, atol=0)
        assert not torch.equal(got.float(), x.float())
        # an op of rounded values alone computes in fp32: no rounding the spec did not write
        for op, want in ((Op.MUL, got.float() * got.float()), (Op.TANH, torch.tanh(got.float()))):
            both = Node(op, (0, 0)[: 1 + (op is Op.MUL)], ("i", "j"))
            out = reference_apply(
                both, {"i": 5, "j": 3}, [(got, ("i", "j"))] * len(both.args), storage=storage
            )
            assert out.dtype == torch.float32 and torch.equal(out, want), op
    kept = reference_apply(node, {"i": 5, "j": 3}, [(x, ("i", "j"))])
    torch.testing.assert_close(kept, x.float(), rtol=0, atol=0)
    # the type: a 16-bit input's own, autocast's for fp32 where it is on, else none
    x32 = torch.ones(2)
    assert storage_dtype(x32.bfloat16()) == torch.bfloat16 and storage_dtype(x32.half()) == torch.float16
    assert storage_dtype(x32) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert storage_dtype(x32) == torch.bfloat16 and storage_dtype(x32.double()) == torch.float64
    with torch.autocast("cpu", dtype=torch.float16):
        assert storage_dtype(x32) == torch.float16


def check_compiled_layer() -> None:
    """The rounded values are computed before the recurrence and read by the cell as inputs; in a
    bf16 layer each is the bf16 arithmetic of the library (each operation's result rounded)."""
    layer = layer_of(SPEC)
    assert {"dx", "a"} <= set(layer.sequence)
    assert not any(layer.graph[i].op is Op.ROUND for i in layer.cell_nodes())
    compare_backends(layer, B=2, T=5, chunk=4)
    compare_backends(layer, B=2, T=5, chunk=4, dtype=torch.bfloat16)
    model = RecurrentLayer(layer, seed=0).bfloat16()
    x = fill(VALUES, (2, 5, 6)).bfloat16()
    v = model.project(x)
    u, k = v["u"], v["k"]  # bf16 projection outputs
    dx = torch.cat([torch.zeros_like(u[:, :1]), u[:, :-1]], 1) - u  # bf16 arithmetic, as torch's
    torch.testing.assert_close(v["dx"], dx, rtol=0, atol=0)
    torch.testing.assert_close(v["a"], u + dx * k, rtol=0, atol=0)
    exact = u.float() + dx.float() * k.float()
    assert not torch.equal(v["a"].float(), exact), "nothing was rounded"
