"""Structure the bundled specs never exercise: renamings that are cycles (a swap is its own inverse,
so a VJP that reuses the forward permutation passes on swaps), sums over padded axes of values that
are non-zero in the padding, a learned parameter inside a hoisted normalisation (tokens past T then
produce non-finite terms that only the ``t < T`` mask keeps out of its gradient), and the reference
on bf16 inputs (it must compute in fp32)."""

from __future__ import annotations

import pytest
import torch
from op_oracles import autograd_vjp, derived_vjp, fill, kernel_vs_reference, layer_of, reference_apply

from archdsl.ir import Node, Op
from archdsl.reference import reference_cell

SIZES = {"h": 2, "i": 3, "j": 3, "k": 3}
# (argument axes, mapping, torch of the compact argument): the renamed value's axes in layout order
RENAMES = {
    # a 3-cycle with an axis (h) that stays: z[h, c, a, b] = x[h, a, b, c]
    "cycle-with-fixed-axis": (
        ("h", "i", "j", "k"),
        (("i", "j"), ("j", "k"), ("k", "i")),
        lambda x: x.permute(0, 3, 1, 2),
    ),
    # the other 3-cycle: i -> k, k -> j, j -> i: z[b, c, a] = x[a, b, c]
    "reverse-cycle": (("i", "j", "k"), (("i", "k"), ("k", "j"), ("j", "i")), lambda x: x.permute(1, 2, 0)),
    # a shift onto an axis the value lacks: x[i, j] -> z[j, k], a singleton trades places
    "shift": (("i", "j"), (("i", "j"), ("j", "k")), lambda x: x),
    # a shift down behind a fixed axis: x[h, j, k] -> z[h, i, j] (j -> i, k -> j), z[h, a, b] = x[h, a, b]
    "shift-down": (("h", "j", "k"), (("j", "i"), ("k", "j")), lambda x: x),
}


def _renamed_axes(axes, mapping):
    m = dict(mapping)
    return tuple(a for a in SIZES if a in {m.get(b, b) for b in axes})


@pytest.mark.parametrize("name", list(RENAMES))
def test_renaming_vjp_and_reference(name):
    axes, mapping, fn = RENAMES[name]
    node = Node(Op.RENAME, (0,), _renamed_axes(axes, mapping), mapping)
    x = torch.randn(*(SIZES[a] for a in axes), dtype=torch.float64)
    dz = torch.randn(*(SIZES[a] for a in node.axes), dtype=torch.float64)
    torch.testing.assert_close(reference_apply(node, SIZES, [(x, axes)]).double(), fn(x.float().double()))
    ours = derived_vjp(SIZES, {"x": axes}, lambda g, ids: g.add(node), {"x": x}, dz)
    torch.testing.assert_close(ours["x"], autograd_vjp(fn, {"x": x}, dz)["x"])


CYCLE_KERNEL = """rnn cycle2
hyper dim = 4
axis h = 2
axis i = 3
axis j = 3
axis k = 3
project x -> u[h, i, j, k]
state S[h, i, j, k]
S' = tanh(0.5 * S[h, k, i, j] + u)
y = S'
output y
"""


def test_cycle_renaming_in_a_kernel():
    """A 3-cycle of the state's axes inside the loop, the heads split across programs."""
    layer = layer_of(CYCLE_KERNEL)
    gen = torch.Generator().manual_seed(0)
    kernel_vs_reference(layer, {"u": torch.randn(2, 5, 2, 3, 3, 3, generator=gen)}, tile=1)


PADDED_SUMS = """rnn padded
hyper dim = 4
axis i = 5
axis j = 3
project x -> u[i, j], w[j]
state h[i]
g = sigmoid(u) + exp(w)
h' = tanh(sum[j](g * (1 + h)) - 0.25 * h)
y = h' * sum[j](exp(w))
output y
"""


def test_sums_over_padded_axes_of_values_non_zero_in_padding():
    """sigmoid(0) and exp(0) fill the padded lanes of j (3 in a block of 4) and of i (5 in 3 tiles
    of 2); every sum forward and backward must mask them."""
    from archdsl.codegen import build_cell

    layer = layer_of(PADDED_SUMS)
    cc = build_cell(layer, 4, 2, 1)
    assert cc.plan.block["j"] == 4 and cc.plan.tiles.get("i") == 3
    gen = torch.Generator().manual_seed(0)
    inputs = {"u": torch.randn(2, 5, 5, 3, generator=gen), "w": torch.randn(2, 5, 3, generator=gen)}
    kernel_vs_reference(layer, inputs, cell=cc, tol=1e-4)  # du has cancellations near 0


HOISTED_PARAM = """rnn hoisted
hyper dim = 4
axis h = 2
axis i = 3
project x -> k[h, i], v[h, i]
param g[h, i] = ones()
param b[h] = zeros()
state S[h, i]
kn = g * k / sqrt(sum[i](k * k)) + b
S' = 0.5 * S + kn * v
y = S'
output y
"""


def test_learned_parameter_inside_a_hoisted_normalisation():
    """``k / sqrt(sum(k * k))`` has no epsilon: the token kernels' tokens past T (loaded as zeros)
    give 0 / 0, and only the ``t < T`` mask keeps their NaN out of the gradients of g and b."""
    from archdsl.codegen import build_cell
    from archdsl.codegen.run.runtime import HoistedCell

    layer = layer_of(HOISTED_PARAM)
    cc = build_cell(layer, 4, None, 1)
    assert isinstance(cc, HoistedCell) and cc.token is not None
    assert (
        set(cc.token.part.consts) == set(cc.token.part.backward.d_consts) and len(cc.token.part.consts) == 2
    )
    assert cc.token.plan.chunk > 5  # tokens past T in the one program per batch element
    gen = torch.Generator().manual_seed(0)
    inputs = {
        "k": fill([-1.5, 0.5, 2.0, -0.25, 1.0], (2, 5, 2, 3)),
        "v": torch.randn(2, 5, 2, 3, generator=gen),
    }
    params = {"g": torch.randn(2, 3, generator=gen), "b": torch.randn(2, generator=gen)}
    kernel_vs_reference(layer, inputs, params=params, cell=cc)


def test_reference_on_bf16_inputs_computes_in_fp32():
    """The same values as bf16 and as fp32: the reference must give the same result (it accumulates
    in fp32 whatever the input dtype); a bf16 computation would differ by ~1e-2."""
    from archdsl.lang.checker import instantiate
    from archdsl.lang.parser import parse_file
    from archdsl.layer import RecurrentLayer

    layer = instantiate(parse_file("specs/e88.rnn"), overrides={"dim": 7, "heads": 2, "n": 3}).layer
    gen = torch.Generator().manual_seed(0)
    ins = {
        n: torch.randn(2, 9, *(layer.sizes[a] for a in ax), generator=gen).bfloat16()
        for n, ax in layer.inputs().items()
    }
    front = {k: v.detach().bfloat16() for k, v in RecurrentLayer(layer, seed=0).frontier_values().items()}
    h0 = {"S": torch.randn(2, 2, 3, 3, generator=gen).bfloat16()}
    y16, f16 = reference_cell(layer, ins, front, h0)
    y32, f32 = reference_cell(
        layer,
        {k: v.float() for k, v in ins.items()},
        {k: v.float() for k, v in front.items()},
        {"S": h0["S"].float()},
    )
    assert y16.dtype == torch.float32 and f16["S"].dtype == torch.float32
    torch.testing.assert_close(y16, y32, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(f16["S"], f32["S"], rtol=1e-6, atol=1e-7)
