"""The projections of ``x`` run as one GEMM: x read once, its gradient written once.

A spec with several ``project x -> …`` lines (gdn's q_k_v_g and a_b, e88's q_k_v and a) keeps one
weight per line (the parameters and their names do not change) but multiplies ``x`` by their rows
stacked, biases included (zeros where a line has none), padded with zero rows to a multiple of 8
(rows of whole 16 bytes for cuBLAS), where the tokens are at least as many as the stacked rows (a
decode step's few tokens keep one GEMM a line: stacking copies the weights). A projection with a
spectral norm keeps its own GEMM, and so does a projection of another source.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse
from archdsl.layer import RecurrentLayer

SPEC = """hyper dim = 8
axis h = 2
axis i = 3
project x -> a[h, i], b[i] bias(uniform(-1, 1))
project x -> c[h]
project x -> d[i] bias(ones()) {third}
project a -> e[h, i]
state s[h, i]
s' = tanh(s * sigmoid(c) + a + b + d + e)
output s
"""


class Products(TorchDispatchMode):
    """Counts matrix products by the width of their first operand's last axis."""

    def __init__(self):
        super().__init__()
        self.widths: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm):
            self.widths.append(
                args[-2].shape[-1] if func.overloadpacket is torch.ops.aten.addmm else args[0].shape[-1]
            )
        return func(*args, **(kwargs or {}))


def layer(third: str = "") -> RecurrentLayer:
    """The spec's layer in eval mode (a spectral norm's power iteration then stands still)."""
    return RecurrentLayer(instantiate(parse(SPEC.format(third=third))).layer, seed=0).eval()


def run(model: RecurrentLayer, x: torch.Tensor):
    x = x.clone().requires_grad_(True)
    y, _ = model(x)
    y.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    return y, x.grad, grads


def forward_products(model: RecurrentLayer, x: torch.Tensor) -> list[int]:
    with torch.no_grad(), Products() as mode:
        model(x)
    return mode.widths


@pytest.mark.parametrize("third", ["", "spectral_norm(0.9)"], ids=["plain", "spectral"])
def test_one_gemm_reads_x_and_gives_what_one_gemm_a_line_gives(third):
    model = layer(third).double()  # float64: the two sums' orders differ by rounding far below the bound
    x = torch.randn(2, 9, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))  # 18 tokens
    widths = forward_products(model, x)  # at least the stack's 16 rows: one GEMM
    # x (width 8) multiplied once for the plain lines, once more for a spectral one; the output map
    # and `project a` read other widths
    assert widths.count(8) == (2 if third else 1)
    assert model._x_gemm == ((0, 1) if third else (0, 1, 2))
    fused = run(model, x)
    model._x_gemm = ()  # one GEMM a line: the form before
    assert forward_products(model, x).count(8) == 3
    apart = run(model, x)
    torch.testing.assert_close(fused[0], apart[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fused[1], apart[1], rtol=1e-12, atol=1e-12)
    assert fused[2].keys() == apart[2].keys() and "proj.d.bias" in fused[2]
    for name in fused[2]:
        torch.testing.assert_close(fused[2][name], apart[2][name], rtol=1e-12, atol=1e-12, msg=name)


def test_the_parameters_and_their_names_stay_one_a_line():
    names = [n for n, _ in layer().named_parameters() if n.startswith("proj.")]
    assert names == [
        "proj.a_b.weight",
        "proj.a_b.bias",
        "proj.c.weight",
        "proj.d.weight",
        "proj.d.bias",
        "proj.e.weight",
    ]


def test_under_autocast_the_stack_is_in_xs_rounded_type():
    model = layer()
    x = torch.randn(2, 9, 8, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = model(x)
        w, bias = model._x_weights(torch.bfloat16)
    assert w.dtype == bias.dtype == torch.bfloat16 and w.shape == (9 + 2 + 3 + 2, 8)
    torch.testing.assert_close(bias[9:11], torch.zeros(2, dtype=torch.bfloat16))  # c has no bias
    assert not w[14:].any() and not bias[14:].any()  # two zero rows: 16 a multiple of 8
    ref, _ = layer()(x)
    torch.testing.assert_close(y.float(), ref, rtol=5e-2, atol=5e-2)


def test_a_few_tokens_keep_one_gemm_a_line_and_give_the_same():
    """A decode step (``step``) and a batch of fewer tokens than the stack's rows multiply the lines
    apart; a sequence fed token by token still equals the full forward, which stacks them."""
    model, g = layer().double(), torch.Generator().manual_seed(0)
    assert model._x_rows() == 16
    assert forward_products(model, torch.randn(2, 8, 8, dtype=torch.float64)).count(8) == 1  # 16 tokens
    assert forward_products(model, torch.randn(3, 5, 8, dtype=torch.float64)).count(8) == 3  # 15: apart
    x = torch.randn(2, 9, 8, dtype=torch.float64, generator=g)
    with torch.no_grad():
        y, final = model(x)
        state, steps = None, []
        for t in range(9):
            y_t, state = model.step(x[:, t], state)
            steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state["s"], final["s"], rtol=1e-12, atol=1e-12)
