"""Short convolutions by ``conv1d`` (archdsl/convolve.py) against the reference's window evaluation:
the op alone on broadcast shapes, and every bundled spec with a ``conv`` through the layer's projection,
values and gradients."""

from pathlib import Path

import pytest
import torch

from archdsl.convolve import depthwise_conv, find_convs
from archdsl.ir import Node, Op
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer
from archdsl.reference import Layout, apply

ROOT = Path(__file__).resolve().parent.parent
CONV_SPECS = sorted(p.stem for p in (ROOT / "specs").glob("*.rnn") if "conv[" in p.read_text())


class _Sizes:
    axes = ("h", "i", "c")
    sizes = {"h": 2, "i": 3, "c": 4}


def _window_sum(a, w, layout):
    """The reference's evaluation: the shifted window, the product, the sum over the window."""
    shifted = apply(Node(Op.SHIFT, (0,), ("h", "i", "c"), "c"), [a], layout)
    return apply(Node(Op.SUM, (0,), ("h", "i"), "c"), [shifted * w], layout)


@pytest.mark.parametrize(
    "w_axes", [("h", "i", "c"), ("c",), ("i", "c")], ids=["per-channel", "one-for-all", "per-i"]
)
@pytest.mark.parametrize("T", [1, 3, 9])
def test_conv_equals_the_window_sum(w_axes, T):
    """Weights per channel or broadcast over some axes; sequences shorter than the window included."""
    layout = Layout(_Sizes, torch.float64)
    g = torch.Generator().manual_seed(T)
    a = torch.randn(2, T, 2, 3, 1, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(*layout.shape(w_axes), generator=g, dtype=torch.float64, requires_grad=True)
    want = _window_sum(a, w, layout)
    got = depthwise_conv(a, w, layout, "c")
    assert got.shape == want.shape
    torch.testing.assert_close(got, want)
    dy = torch.randn_like(want)
    torch.testing.assert_close(torch.autograd.grad(got, [a, w], dy), torch.autograd.grad(want, [a, w], dy))


def _layer(name: str) -> RecurrentLayer:
    ir = instantiate(parse_file(ROOT / "specs" / f"{name}.rnn"), "test", {}).layer
    return RecurrentLayer(ir, seed=0).double()


def test_every_conv_spec_is_found():
    assert {"gdn", "mamba2", "deltanet", "kda", "mamba", "gated_deltaproduct"} <= set(CONV_SPECS)
    for name in CONV_SPECS:
        layer = _layer(name)
        assert any(layer._convs[v] for v in layer.ir.sequence), f"{name}: no convolution fused"


@pytest.mark.parametrize("name", CONV_SPECS)
def test_projection_equals_the_reference_windows(name):
    """The layer's sequence values and their gradients (input and every parameter) with the
    convolutions fused against the same layer evaluating every window node."""
    layer = _layer(name)
    x = torch.randn(2, 7, layer.ir.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_(True)
    params = [x, *layer.parameters()]
    fused = layer.project(x)
    g = layer.ir.graph
    layer._convs = {v: [] for v in layer.ir.sequence}
    layer._sequence_order = {v: sorted(g.ancestors([i])) for v, i in layer.ir.sequence.items()}
    plain = layer.project(x)
    assert fused.keys() == plain.keys()
    for v in layer.ir.sequence:
        torch.testing.assert_close(fused[v], plain[v])
        dy = torch.randn_like(plain[v])
        want = torch.autograd.grad(plain[v], params, dy, allow_unused=True, retain_graph=True)
        got = torch.autograd.grad(fused[v], params, dy, allow_unused=True, retain_graph=True)
        for a, b in zip(got, want):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b)


def test_a_per_token_weight_is_not_fused():
    """``conv[c](a, w)`` with ``w`` computed from the input varies per token: no conv1d for it."""
    layer = _layer("gdn")
    g = layer.ir.graph
    assert find_convs(g, list(layer.ir.sequence.values()), lambda i: False) == []
