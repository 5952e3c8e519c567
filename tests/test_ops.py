"""Every IR op on its own, three ways (tests/op_oracles.py): its VJP rule against torch autograd, the
reference's semantics against plain torch, its emitted Triton against the reference.

``CASES`` is keyed by ``Op``; ``test_every_op_has_three_oracles`` fails when an op is added without
its row. The values reach every branch: negative inputs, softplus on both sides of 1 and above its
threshold 20, tanh near 0 (the series below 0.0625) and large, exact ties for max/min, relu, abs,
step and sign at and around 0, log, sqrt and denominators away from 0. Kernel inputs fill axes of
sizes 5 and 3 (padded to 8 and 4 in a register block) and the state update sums over the padded
axis a value that is non-zero in the padding; B = 2 and T = 5 with checkpoints every 4 steps, so a
program's tokens past T are the next batch element's.

Subgradients (asserted, torch's convention): relu'(0) = 0, abs'(0) = sign(0) = 0, step and sign have
no gradient, and at a tie max/min pass half the cotangent to each argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import round_oracles
import shift_oracles
import torch
import torch.nn.functional as F
from op_oracles import (
    autograd_vjp,
    derived_vjp,
    fill,
    kernel_vs_reference,
    layer_of,
    reference_apply,
    swap_op,
)

from archdsl.api import layer_ir
from archdsl.ir import BINARY, LEAVES, SCALAR, SEQUENCE, TRANSFORMS, UNARY, Node, Op, fold
from archdsl.reference import TORCH

GENERIC = [-3.0, -1.5, -0.5, -0.01, 0.0, 0.01, 0.5, 1.5, 3.0, -0.75, 2.25]
AROUND_ZERO = [-2.0, -1e-3, -1e-20, 0.0, 1e-20, 1e-3, 2.0, -0.7, 0.0, 0.7, -0.0]
POSITIVE = [0.01, 0.3, 1.0, 2.5, 40.0, 1e-3, 7.0, 0.9]
SOFTPLUS = [-30.0, -5.0, -1.0, -0.1, 0.0, 0.5, 1.5, 5.0, 15.0, 19.9, 20.5, 25.0, 40.0, 1.01]
TANH = [-20.0, -3.0, -0.5, -0.06, -1e-3, 0.0, 1e-3, 0.03, 0.0625, 0.07, 1.0, 5.0, 20.0]
EXP = [-20.0, -3.0, -1.0, 0.0, 0.5, 2.0, 5.0, -0.25]
WIDE = [-30.0, -5.0, -1.0, 0.0, 0.5, 3.0, 30.0, -0.2]
# binary: pairs at equal positions; max/min with exact ties (-1, 0, -3, 0.25)
PAIR_A = [-1.0, 0.0, 0.5, 2.0, -3.0, 1.0, 0.25, -0.5, 1.5]
PAIR_B = [-1.0, 0.0, 1.0, -2.0, -3.0, 0.5, 0.25, 2.0, -0.75]
DENOM = [0.3, -2.0, 1.5, 4.0, -0.5, 0.25, 3.0, -7.0, 1.0]


@dataclass(frozen=True)
class Unary:
    torch_op: object  # the torch op, for autograd
    formula: object  # an fp64 formula of its meaning, for the reference
    expr: str  # the op in a spec, on ``u``
    values: list


@dataclass(frozen=True)
class Binary:
    torch_op: object
    formula: object
    expr: str  # on ``u`` and ``w``
    a: list
    b: list


def _where(c, a, b):
    return torch.where(c, a, b)


def _step(a):
    return (a > 0).to(a.dtype)


UNARY_CASES = {
    Op.NEG: Unary(torch.neg, lambda a: 0.0 - a, "-u", GENERIC),
    Op.EXP: Unary(torch.exp, lambda a: 2.718281828459045**a, "exp(u)", EXP),
    Op.LOG: Unary(
        torch.log, lambda a: torch.log2(a) / torch.log2(torch.tensor(2.718281828459045)), "log(u)", POSITIVE
    ),
    Op.TANH: Unary(torch.tanh, lambda a: 1.0 - 2.0 / (torch.exp(2.0 * a) + 1.0), "tanh(u)", TANH),
    Op.SIGMOID: Unary(torch.sigmoid, lambda a: 1.0 / (1.0 + torch.exp(-a)), "sigmoid(u)", WIDE),
    Op.SOFTPLUS: Unary(F.softplus, lambda a: torch.log1p(torch.exp(a)), "softplus(u)", SOFTPLUS),
    Op.RELU: Unary(torch.relu, lambda a: _where(a > 0, a, 0.0 * a), "relu(u)", AROUND_ZERO),
    Op.ABS: Unary(torch.abs, lambda a: _where(a < 0, -a, a), "abs(u)", AROUND_ZERO),
    Op.SQRT: Unary(torch.sqrt, lambda a: a**0.5, "sqrt(u)", POSITIVE),
    Op.STEP: Unary(_step, lambda a: _where(a > 0, 1.0 + 0 * a, 0 * a), "relu(u)", AROUND_ZERO),
    Op.SIGN: Unary(torch.sign, lambda a: (a > 0).double() - (a < 0).double(), "relu(u)", AROUND_ZERO),
    # Euler: e^(ia) = cos a + i sin a
    Op.COS: Unary(torch.cos, lambda a: torch.exp(1j * a).real, "cos(u)", WIDE),
    Op.SIN: Unary(torch.sin, lambda a: torch.exp(1j * a).imag, "sin(u)", WIDE),
}
BINARY_CASES = {
    Op.ADD: Binary(torch.add, lambda a, b: a - (-b), "u + w", GENERIC, GENERIC[::-1]),
    Op.SUB: Binary(torch.sub, lambda a, b: a + (-b), "u - w", GENERIC, GENERIC[::-1]),
    Op.MUL: Binary(torch.mul, lambda a, b: a / (1.0 / b), "u * w", GENERIC, DENOM),
    Op.DIV: Binary(torch.div, lambda a, b: a * b**-1.0, "u / w", GENERIC, DENOM),
    Op.MAXIMUM: Binary(torch.maximum, lambda a, b: _where(a >= b, a, b), "max(u, w)", PAIR_A, PAIR_B),
    Op.MINIMUM: Binary(torch.minimum, lambda a, b: _where(a <= b, a, b), "min(u, w)", PAIR_A, PAIR_B),
}

TEMPLATE = """rnn op_{name}
hyper dim = 4
axis i = 5
axis j = 3
project x -> {projections}
state h[i]
e[i, j] = {expr}
h' = 0.5 * h + sum[j](e + h)
y = h'
output y
"""


def op_spec(name: str, expr: str, projections: str = "u[i, j]") -> str:
    """``e = expr`` in a state update that sums it (plus the state) over the padded axis j."""
    return TEMPLATE.format(name=name, expr=expr, projections=projections)


B, T = 2, 5
SIZES = {"i": 5, "j": 3}


# ---- unary and binary ops ------------------------------------------------------------------------
@pytest.mark.parametrize("op", sorted(UNARY_CASES, key=lambda o: o.value), ids=lambda o: o.value)
def test_unary_vjp_matches_autograd(op):
    case = UNARY_CASES[op]
    x = fill(case.values, (5, 3))
    dz = fill(GENERIC, (5, 3), offset=3)
    ours = derived_vjp(
        SIZES, {"x": ("i", "j")}, lambda g, ids: g.add(Node(op, (ids["x"],), ("i", "j"))), {"x": x}, dz
    )
    theirs = autograd_vjp(case.torch_op, {"a": x}, dz)
    torch.testing.assert_close(ours["x"], theirs["a"], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("op", sorted(BINARY_CASES, key=lambda o: o.value), ids=lambda o: o.value)
@pytest.mark.parametrize("broadcast", [False, True], ids=["same-axes", "broadcast"])
def test_binary_vjp_matches_autograd(op, broadcast):
    """Both arguments on [i, j], and the second on [j] only (its cotangent is summed over i)."""
    case = BINARY_CASES[op]
    b_axes = ("j",) if broadcast else ("i", "j")
    x = fill(case.a, (5, 3))
    y = fill(case.b, (3,) if broadcast else (5, 3))
    dz = fill(GENERIC, (5, 3), offset=3)
    ours = derived_vjp(
        SIZES,
        {"x": ("i", "j"), "y": b_axes},
        lambda g, ids: g.add(Node(op, (ids["x"], ids["y"]), ("i", "j"))),
        {"x": x, "y": y},
        dz,
    )
    theirs = autograd_vjp(case.torch_op, {"a": x, "b": y}, dz)
    torch.testing.assert_close(ours["x"], theirs["a"], rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(ours["y"], theirs["b"], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("op", sorted(UNARY_CASES, key=lambda o: o.value), ids=lambda o: o.value)
def test_unary_reference_matches_torch(op):
    case = UNARY_CASES[op]
    x = fill(case.values, (5, 3))
    got = reference_apply(Node(op, (0,), ("i", "j")), SIZES, [(x, ("i", "j"))])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), case.formula(x.float().double()), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("op", sorted(BINARY_CASES, key=lambda o: o.value), ids=lambda o: o.value)
def test_binary_reference_matches_torch(op):
    case = BINARY_CASES[op]
    x, y = fill(case.a, (5, 3)), fill(case.b, (3,))
    got = reference_apply(Node(op, (0, 1), ("i", "j")), SIZES, [(x, ("i", "j")), (y, ("j",))])
    torch.testing.assert_close(got.double(), case.formula(x, y.expand(5, 3)), rtol=2e-6, atol=1e-6)


def _kernel_case(op):
    if op in UNARY_CASES:
        case = UNARY_CASES[op]
        layer = layer_of(op_spec(op.value, case.expr))
        if op in (Op.STEP, Op.SIGN):  # not in the language: only derived backwards use them
            layer = swap_op(layer, Op.RELU, op)
        return layer, {"u": fill(case.values, (B, T, 5, 3))}
    case = BINARY_CASES[op]
    layer = layer_of(op_spec(op.value, case.expr, "u[i, j], w[i, j]"))
    return layer, {"u": fill(case.a, (B, T, 5, 3)), "w": fill(case.b, (B, T, 5, 3))}


@pytest.mark.parametrize(
    "op", sorted({*UNARY_CASES, *BINARY_CASES}, key=lambda o: o.value), ids=lambda o: o.value
)
def test_elementwise_kernel_matches_reference(op):
    from archdsl.codegen import build_cell
    from archdsl.codegen.emit.triton import TRITON

    layer, inputs = _kernel_case(op)
    cc = build_cell(layer, 4, 2, 1)
    assert cc.plan.split == ("i",) and cc.plan.n_tiles == 3  # several programs, the last one padded
    head = TRITON[op].split("{")[0]
    assert head in cc.path.read_text(), f"{op}: its Triton rule is not in the generated kernel"
    kernel_vs_reference(layer, inputs, cell=cc)


# ---- axis ops: a sum, a 3-cycle renaming (not a swap: its own inverse), a broadcast ------------------
SIZES3 = {"i": 3, "j": 3, "k": 3}
CYCLE = (("i", "j"), ("j", "k"), ("k", "i"))  # i -> j, j -> k, k -> i
AXIS_CASES = {
    # op: (sizes, argument axes, node, torch of the compact argument)
    Op.SUM: (SIZES, ("i", "j"), Node(Op.SUM, (0,), ("i",), "j"), lambda x: x.sum(1)),
    # z[j=a, k=b, i=c] = x[i=a, j=b, k=c], so z[c, a, b] = x[a, b, c]
    Op.RENAME: (
        SIZES3,
        ("i", "j", "k"),
        Node(Op.RENAME, (0,), ("i", "j", "k"), CYCLE),
        lambda x: x.permute(2, 0, 1),
    ),
    Op.EXPAND: (SIZES, ("i",), Node(Op.EXPAND, (0,), ("i", "j"), ("j",)), lambda x: x[:, None].expand(5, 3)),
}


@pytest.mark.parametrize("op", list(AXIS_CASES), ids=lambda o: o.value)
def test_axis_op_vjp_matches_autograd(op):
    sizes, axes, node, fn = AXIS_CASES[op]
    x = torch.randn(*(sizes[a] for a in axes), dtype=torch.float64)
    dz = torch.randn(*(sizes[a] for a in node.axes), dtype=torch.float64)
    ours = derived_vjp(sizes, {"x": axes}, lambda g, ids: g.add(node), {"x": x}, dz)
    torch.testing.assert_close(ours["x"], autograd_vjp(fn, {"x": x}, dz)["x"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", list(AXIS_CASES), ids=lambda o: o.value)
def test_axis_op_reference_matches_torch(op):
    sizes, axes, node, fn = AXIS_CASES[op]
    x = torch.randn(*(sizes[a] for a in axes), dtype=torch.float64)
    torch.testing.assert_close(reference_apply(node, sizes, [(x, axes)]).double(), fn(x.float().double()))


CYCLE_SPEC = """rnn cycle
hyper dim = 4
axis i = 3
axis j = 3
axis k = 3
project x -> u[i, j, k]
state S[i, j, k]
S' = 0.5 * S[j, k, i] + sigmoid(u)
y = sum[k](S' * S')
output y
"""


def _axis_kernel_case(op):
    if op is Op.SUM:
        return layer_of(op_spec("sum", "u")), {"u": fill(GENERIC, (B, T, 5, 3))}
    if op is Op.EXPAND:
        return layer_of(op_spec("expand", "u", "u[i]")), {"u": fill(GENERIC, (B, T, 5))}
    layer = layer_of(CYCLE_SPEC)
    assert any(n.op is Op.RENAME and n.attr == CYCLE for n in layer.graph.nodes)
    return layer, {"u": torch.randn(B, T, 3, 3, 3, generator=torch.Generator().manual_seed(0))}


@pytest.mark.parametrize("op", list(AXIS_CASES), ids=lambda o: o.value)
def test_axis_op_kernel_matches_reference(op):
    layer, inputs = _axis_kernel_case(op)
    kernel_vs_reference(layer, inputs)


# ---- leaves: per-token inputs, parameters, states and literals -----------------------------------
LEAF_SPEC = """rnn leaves
hyper dim = 4
axis i = 5
project x -> u[i]
param p[i] = ones()
state h[i]
h' = 0.75 * h * p + u
y = h' * u
output y
"""


def _leaf_step(h, u, p):
    h2 = 0.75 * h * p + u
    return h2, h2 * u


def test_leaves_vjp_matches_autograd():
    """derive_backward of one step: the seeds reach the previous state, the input and the parameter."""
    from op_oracles import shim

    from archdsl.autodiff import GRAD, derive_backward, extract_cell
    from archdsl.reference import Layout, evaluate

    cell = extract_cell(layer_of(LEAF_SPEC))
    bwd = derive_backward(cell)
    (c,) = cell.consts
    gen = torch.Generator().manual_seed(0)
    vals = {n: torch.randn(5, generator=gen, dtype=torch.float64) for n in ("h", "u", c, "d:h", "d:y")}
    lay = shim(bwd.graph, {"i": 5})
    layout = Layout(lay, torch.float64)
    outs = {"h": bwd.d_state["h"], "u": bwd.d_inputs["u"], c: bwd.d_consts[c]}
    env = evaluate(lay, sorted(bwd.graph.ancestors(outs.values())), {}, lambda i, n: vals[n.attr], layout)
    xs = {n: vals[n].clone().requires_grad_(True) for n in ("h", "u", c)}
    h2, y = _leaf_step(*xs.values())
    theirs = torch.autograd.grad([h2, y], list(xs.values()), [vals[GRAD + "h"], vals[GRAD + "y"]])
    for (name, node), want in zip(outs.items(), theirs):
        torch.testing.assert_close(env[node].reshape(5), want, rtol=1e-12, atol=1e-12, msg=name)


def test_leaves_reference_matches_torch():
    from archdsl.reference import reference_cell

    layer = layer_of(LEAF_SPEC)
    gen = torch.Generator().manual_seed(0)
    u, p, h = (
        torch.randn(B, T, 5, generator=gen),
        torch.randn(5, generator=gen),
        torch.randn(B, 5, generator=gen),
    )
    (front,) = layer.frontier()
    y, final = reference_cell(layer, {"u": u}, {front: p}, {"h": h})
    hh, ys = h.double(), []
    for t in range(T):
        hh, yt = _leaf_step(hh, u[:, t].double(), p.double())
        ys.append(yt)
    torch.testing.assert_close(y.double(), torch.stack(ys, 1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(final["h"].double(), hh, rtol=1e-6, atol=1e-6)


def test_leaves_kernel_matches_reference():
    gen = torch.Generator().manual_seed(0)
    inputs = {"u": torch.randn(B, T, 5, generator=gen)}
    kernel_vs_reference(layer_of(LEAF_SPEC), inputs, params={"p": torch.randn(5, generator=gen)})


# ---- a parameter transform, run in torch outside the kernel -----------------------------------------
SN_SPEC = """rnn sn
hyper dim = 4
axis i = 5
axis j = 5
project x -> wx[i]
param W_h[i, j] = xavier()
state h[i]
h' = tanh(wx + sum[j](spectral_norm(W_h, 0.9) * h[j]))
y = h'
output y
"""


def _exact_spectral_norm(w):
    return 0.9 * w / torch.linalg.matrix_norm(w, ord=2)


def test_spectral_norm_gradient_matches_autograd():
    """Converged power iteration: d sigma / dW = u v^T, as autograd of the exact matrix norm."""
    from archdsl.layer import SpectralNorm

    w = torch.randn(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    dz = torch.randn(5, 5, dtype=torch.float64)
    sn = SpectralNorm(5, 0.9, iters=200).double()
    ours = autograd_vjp(sn, {"w": w}, dz)["w"]
    torch.testing.assert_close(
        ours, autograd_vjp(_exact_spectral_norm, {"w": w}, dz)["w"], rtol=1e-6, atol=1e-8
    )


def test_spectral_norm_reference_matches_torch():
    from archdsl.layer import SpectralNorm

    w = torch.randn(5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(SpectralNorm(5, 0.9, iters=200).double()(w), _exact_spectral_norm(w))


def test_spectral_norm_compiled_layer_matches_reference():
    from kernel_harness import compare_backends

    compare_backends(layer_of(SN_SPEC), B=2, T=5, chunk=4)


# ---- a constant of the sizes: index, computed outside the cell ------------------------------------
INDEX_SPEC = """rnn index
hyper dim = 4
axis i = 5
axis j = 3
project x -> u[i, j]
state h[i]
e = index[i]() - 0.5 * index[j]()
h' = 0.5 * h + sum[j](u * e)
y = h' * index[i]()
output y
"""


def test_index_vjp_matches_autograd():
    """No arguments, so no cotangent of its own; a product with it carries the constant back."""
    from archdsl.autodiff import VJP

    assert VJP[Op.INDEX](None, Node(Op.INDEX, (), ("i",), "i"), 0, (), 1) == []
    x = fill(GENERIC, (5, 3))
    dz = fill(GENERIC, (5, 3), offset=3)

    def build(g, ids):
        idx = g.add(Node(Op.INDEX, (), ("i",), "i"))
        return g.add(Node(Op.MUL, (ids["x"], idx), ("i", "j")))

    ours = derived_vjp(SIZES, {"x": ("i", "j")}, build, {"x": x}, dz)
    arange = torch.arange(5, dtype=torch.float64)[:, None]
    theirs = autograd_vjp(lambda a: a * arange, {"a": x}, dz)
    torch.testing.assert_close(ours["x"], theirs["a"], rtol=1e-12, atol=1e-12)


def test_index_reference_matches_torch_arange():
    got = reference_apply(Node(Op.INDEX, (), ("j",), "j"), SIZES, [])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.reshape(3), torch.arange(3, dtype=torch.float32))


def test_index_compiled_layer_matches_reference():
    """index is constant: it reaches the kernel as a frontier value, never as code of its own."""
    from kernel_harness import compare_backends

    from archdsl.ir import Kind

    layer = layer_of(INDEX_SPEC)
    kinds = layer.graph.kinds()
    index = [i for i, n in enumerate(layer.graph.nodes) if n.op is Op.INDEX]
    assert len(index) == 2 and all(kinds[i] == Kind.CONST for i in index)
    compare_backends(layer, B=2, T=5, chunk=4)


# ---- the token's position: a per-token leaf the layer supplies (more in tests/test_position.py) ---
POSITION_SPEC = """rnn position
hyper dim = 4
axis i = 5
project x -> u[i]
state h[i]
a = u * cos(0.5 * position())
h' = 0.5 * h + a
y = h' * u
output y
"""


def test_position_vjp_matches_autograd():
    """No arguments, so no cotangent of its own; a product with it carries the position back."""
    from archdsl.autodiff import VJP
    from archdsl.layer import RecurrentLayer

    assert VJP[Op.POSITION](None, Node(Op.POSITION, (), ()), 0, (), 1) == []
    layer = RecurrentLayer(layer_of(POSITION_SPEC), seed=0).double()
    x = fill(GENERIC, (1, 6, 4)).requires_grad_(True)
    dz = fill(GENERIC, (1, 6, 5), offset=3)
    (ours,) = torch.autograd.grad(layer.project(x)["a"], x, dz)
    cos = torch.cos(0.5 * torch.arange(6, dtype=torch.float64))[None, :, None]
    theirs = autograd_vjp(lambda a: a @ layer.proj["u"].weight.detach().T * cos, {"a": x.detach()}, dz)
    torch.testing.assert_close(ours, theirs["a"], rtol=1e-12, atol=1e-12)


def test_position_reference_matches_torch_arange():
    from archdsl.layer import RecurrentLayer

    layer = RecurrentLayer(layer_of(POSITION_SPEC), seed=0)
    x = fill(GENERIC, (2, 6, 4)).float()
    values = layer.project(x)
    assert values["a"].dtype == torch.float32
    t = torch.arange(6, dtype=torch.float32)[None, :, None]
    torch.testing.assert_close(values["a"], values["u"] * torch.cos(0.5 * t))


def test_position_compiled_layer_matches_reference():
    """A position never reaches a kernel: the value that reads it is computed before the recurrence
    and read by the cell as an input."""
    from kernel_harness import compare_backends

    layer = layer_of(POSITION_SPEC)
    assert "a" in layer.sequence and not any(layer.graph[i].op is Op.POSITION for i in layer.cell_nodes())
    compare_backends(layer, B=2, T=5, chunk=4)


# ---- rounded(): to the layer's 16-bit type, before the recurrence (tests/round_oracles.py) -------
def test_round_vjp_matches_autograd():
    round_oracles.check_vjp()


def test_round_reference_matches_torch_casts():
    round_oracles.check_reference()


def test_round_compiled_layer_matches_reference():
    round_oracles.check_compiled_layer()


# ---- across tokens: shift and its transpose (tests/shift_oracles.py) ----------------------------
def test_shift_vjp_matches_autograd():
    shift_oracles.check_vjps()


def test_shift_reference_matches_torch_conv1d():
    shift_oracles.check_reference()


def test_shift_compiled_layer_matches_reference():
    """The prologue (conv, shift) in torch, the cell compiled: the whole layer against the reference."""
    from kernel_harness import compare_backends

    compare_backends(shift_oracles.shift_layer(), B=2, T=7, chunk=4)


# ---- the table: every op has its three oracles ---------------------------------------------------
ORACLES: dict[Op, tuple] = {
    **{
        op: (
            test_unary_vjp_matches_autograd,
            test_unary_reference_matches_torch,
            test_elementwise_kernel_matches_reference,
        )
        for op in UNARY_CASES
    },
    **{
        op: (
            test_binary_vjp_matches_autograd,
            test_binary_reference_matches_torch,
            test_elementwise_kernel_matches_reference,
        )
        for op in BINARY_CASES
    },
    **{
        op: (
            test_axis_op_vjp_matches_autograd,
            test_axis_op_reference_matches_torch,
            test_axis_op_kernel_matches_reference,
        )
        for op in AXIS_CASES
    },
    **{
        op: (
            test_leaves_vjp_matches_autograd,
            test_leaves_reference_matches_torch,
            test_leaves_kernel_matches_reference,
        )
        for op in LEAVES
    },
    Op.INDEX: (
        test_index_vjp_matches_autograd,
        test_index_reference_matches_torch_arange,
        test_index_compiled_layer_matches_reference,
    ),
    Op.SPECTRAL_NORM: (
        test_spectral_norm_gradient_matches_autograd,
        test_spectral_norm_reference_matches_torch,
        test_spectral_norm_compiled_layer_matches_reference,
    ),
    Op.POSITION: (
        test_position_vjp_matches_autograd,
        test_position_reference_matches_torch_arange,
        test_position_compiled_layer_matches_reference,
    ),
    **{
        op: (
            test_shift_vjp_matches_autograd,
            test_shift_reference_matches_torch_conv1d,
            test_shift_compiled_layer_matches_reference,
        )
        for op in SEQUENCE - {Op.POSITION, Op.ROUND}
    },
    Op.ROUND: (
        test_round_vjp_matches_autograd,
        test_round_reference_matches_torch_casts,
        test_round_compiled_layer_matches_reference,
    ),
}


def test_every_op_has_three_oracles():
    """A new Op fails here until it has a row: its VJP, its reference and its kernel checked."""
    assert set(ORACLES) == set(Op), sorted(o.value for o in set(Op) - set(ORACLES))
    assert set(UNARY_CASES) == UNARY and set(BINARY_CASES) == BINARY
    assert {Op.SPECTRAL_NORM} == TRANSFORMS  # a new transform needs an oracle of its own
    for op, tests in ORACLES.items():
        assert len(tests) == 3 and all(callable(t) and t.__name__.startswith("test_") for t in tests), op


@pytest.mark.parametrize("op", sorted(SCALAR, key=lambda o: o.name), ids=lambda o: o.name)
def test_literals_fold_as_the_reference_computes(op):
    """An op of literal scalars is folded into a literal when the spec is elaborated (``ir.fold``):
    at the same fp64 inputs the folded value is the reference interpreter's, to the last bits."""
    values = [-3.5, -0.25, -0.0, 0.0, 0.7, 2.0, 19.9, 20.5, 30.0]
    pairs = [(a,) for a in values] if op in UNARY else [(a, b) for a in values for b in (-1.5, 0.5, 4.0)]
    for args in pairs:
        got = fold(op, args)
        want = TORCH[op](*(torch.tensor(a, dtype=torch.float64) for a in args)).item()
        if not math.isfinite(want):
            assert got is None, (op, args)
        else:
            assert got == pytest.approx(want, rel=1e-15, abs=1e-300), (op, args)


def test_a_literal_expression_is_one_literal_node():
    """``1 / sqrt(n)`` of a size is one literal in the graph, so no kernel reads it as a constant
    tensor or computes its gradient (GLA's readout did both, a reduction over the heads and values at
    every token)."""
    ir = layer_ir("gla", "test")
    g = ir.graph
    assert not [n for n in g.nodes if n.op is Op.SQRT and g[n.args[0]].op is Op.CONST], "sqrt(n) kept"
    params = {i for i, n in enumerate(g.nodes) if n.op is Op.PARAM}
    for i in ir.frontier():  # every value the cell reads as a constant tensor reads a parameter
        assert g.ancestors([i]) & params, g[i]
