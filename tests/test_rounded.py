"""``rounded(a)`` in a spec: where it may stand, and the zoo specs that use it to round where their
libraries do (the op's three oracles are in tests/test_ops.py through tests/round_oracles.py)."""

from __future__ import annotations

import pytest
import torch
from op_oracles import layer_of
from round_oracles import SPEC

from archdsl.api import layer_ir
from archdsl.errors import ArchdslError
from archdsl.layer import RecurrentLayer


@pytest.mark.parametrize(
    ("target", "line", "message", "where"),
    [
        (
            "h' = 0.5 * h + a * k",
            "h' = rounded(0.5 * h) + a * k",
            "the update of 'h' reads a rounded",
            (8, 6),
        ),
        ("y = h' * k", "y = rounded(h') * k", "'y' mixes a rounded", (9, 5)),
    ],
)
def test_rounding_a_value_of_the_state_is_refused_where_it_is_written(target, line, message, where):
    """The step computes in fp32 (the state and its accumulation); rounding is per-token work on a
    value made before the recurrence."""
    with pytest.raises(ArchdslError, match=message) as err:
        layer_of(SPEC.replace(target, line))
    span = err.value.span
    assert (span.line, span.col) == where
    assert "on its own line" in str(err.value.hint)


def test_rounded_is_the_identity_in_fp32_and_rounds_under_autocast():
    layer = RecurrentLayer(layer_of(SPEC), seed=0)
    plain = RecurrentLayer(layer_of(SPEC.replace("rounded", "")), seed=0)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(2, 7, 6)
    torch.testing.assert_close(layer(x)[0], plain(x)[0], rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = layer.project(x)["dx"], plain.project(x)["dx"]
    assert a.dtype == torch.bfloat16 and b.dtype == torch.float32
    assert not torch.equal(a.float(), b)
    torch.testing.assert_close(a, b.bfloat16(), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("spec", "values"), [("rwkv6", ("dx", "xx", "xr", "xk", "mr")), ("retnet", ("cs", "sn", "qr", "kr"))]
)
def test_the_zoo_rounds_where_its_library_does(spec, values):
    """rwkv6's token-shift lerps are fla's bf16 arithmetic (each product and sum rounded), retnet's
    rotary tables and rotated q and k are stored in the input type: in a bf16 layer those values are
    bf16 tensors."""
    ir = layer_ir(spec, "test")
    model = RecurrentLayer(ir, seed=0).bfloat16()
    got = model.project(torch.randn(2, 5, ir.dim).bfloat16())
    for name in values:
        v = got[name]
        assert v.dtype == torch.bfloat16, name
