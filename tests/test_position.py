"""``position()``: the token's place in its sequence, a per-token leaf the layer supplies.

Its values (0, 1, … per row), its restart at each packed sequence, its continuation from the state
``x:position`` (a prefix and its continuation equal the whole sequence, with a shift's history
beside it), the located error where a step would need it, and specs/retnet.rnn (rotary per token,
a plain decayed state) against the same math with the rotation carried in the state
(tests/specs/retnet_state_rotation.rnn, the spec before ``position()``) on the same weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kernel_harness import assert_close
from op_oracles import layer_of

from archdsl.errors import ArchdslError
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer
from archdsl.layer_io import HISTORY, POSITION, LayerInputError

ROOT = Path(__file__).resolve().parents[1]

#: a sequence value that reads the position and an earlier token's: ``a`` is computed before the
#: recurrence, its shift reaching into the history of a continued sequence (and its positions)
POS_SPEC = """rnn pos
hyper dim = 6
axis i = 3
project x -> u[i], k[i]
state h[i]
a = cos(0.3 * position()) * u + shift(k * position())
h' = 0.5 * h + a
y = h' * k
output y
"""


def retnet(path: Path = ROOT / "specs" / "retnet.rnn"):
    return instantiate(parse_file(path), "test").layer


def test_position_counts_the_tokens_of_each_row():
    layer = RecurrentLayer(layer_of(POS_SPEC), seed=0)
    x = torch.randn(2, 5, 6)
    values = layer.project(x)
    t = torch.arange(5.0)[None, :, None]
    u, k = values["u"], values["k"]
    k_prev = torch.cat([torch.zeros_like(k[:, :1]), k[:, :-1]], 1)
    assert_close("a", values["a"], torch.cos(0.3 * t) * u + k_prev * (t - 1), 1e-6)
    start = torch.tensor([3, 10])
    moved = layer.project(x, start[:, None] + torch.arange(5))["a"]
    t = (start[:, None] + torch.arange(5.0))[..., None]
    assert_close("a from 3 and 10", moved, torch.cos(0.3 * t) * u + k_prev * (t - 1), 1e-6)


@pytest.mark.parametrize("spec", ["pos", "retnet"])
def test_a_prefix_and_its_continuation_equal_the_whole_sequence(spec):
    """The returned ``x:position`` counts the tokens seen; given back, positions go on from it (and a
    shift reads the tokens of ``x:history``)."""
    ir = layer_of(POS_SPEC) if spec == "pos" else retnet()
    layer = RecurrentLayer(ir, seed=0)
    x = torch.randn(2, 9, ir.dim)
    y, whole = layer(x)
    y1, mid = layer(x[:, :4])
    assert mid[POSITION].tolist() == [4, 4] and (HISTORY in mid) == (spec == "pos")
    y2, end = layer(x[:, 4:], mid)
    y3, last = layer.step(x[:, 8], {**layer(x[:, 4:8], mid)[1]})
    assert end[POSITION].tolist() == [9, 9] == last[POSITION].tolist()
    assert_close("y", torch.cat([y1, y2], 1), y, 1e-6)
    assert_close("y by a step", y3, y[:, 8], 1e-6)
    for s in ir.states:
        assert_close(f"final {s}", end[s], whole[s], 1e-6)


def test_packed_positions_restart_at_each_sequence():
    """Each packed sequence counts from its own ``x:position`` (0 when absent), as if run alone."""
    for ir in (layer_of(POS_SPEC), retnet()):  # with a shift (sequences projected apart) and without
        layer = RecurrentLayer(ir, seed=0)
        cu = [0, 3, 4, 9]
        x = torch.randn(1, 9, ir.dim)
        for start in (None, torch.tensor([0, 5, 2])):
            y, finals = layer(x, None if start is None else {POSITION: start}, cu_seqlens=torch.tensor(cu))
            for k, (a, b) in enumerate(zip(cu, cu[1:])):
                alone = None if start is None else {POSITION: start[k : k + 1]}
                y_k, f_k = layer(x[:, a:b], alone)
                assert_close(f"y of sequence {k}", y[:, a:b], y_k, 1e-6)
                assert finals[POSITION][k] == f_k[POSITION][0]


def test_a_position_state_must_count_per_row():
    layer = RecurrentLayer(layer_of(POS_SPEC), seed=0)
    x = torch.randn(2, 3, 6)
    with pytest.raises(LayerInputError, match=r"'x:position' must be \[batch\] = \[2\] integers"):
        layer(x, {POSITION: torch.zeros(2)})
    plain = RecurrentLayer(layer_of(POS_SPEC.replace("position()", "1.0")), seed=0)
    with pytest.raises(LayerInputError, match="for specs that read position"):
        plain(x, {POSITION: torch.zeros(2, dtype=torch.long)})


@pytest.mark.parametrize(
    ("line", "message", "where"),
    [
        ("h' = 0.5 * h + position() * u", "the update of 'h' reads the token's position inside", (7, 6)),
        ("y = h * position()", "'y' mixes the token's position with the state", (8, 5)),
    ],
)
def test_a_step_that_needs_the_position_is_refused_where_it_reads_it(line, message, where):
    """A position is per-token work before the recurrence: a state's update or a value that also
    reads the state must take it from a value defined on its own line."""
    target = "h' = 0.5 * h + a" if line.startswith("h'") else "y = h' * k"
    src = POS_SPEC.replace(target, line)
    with pytest.raises(ArchdslError, match=message) as err:
        layer_of(src)
    span = err.value.span
    assert (span.line, span.col) == where
    assert "on its own line" in str(err.value.hint)


def test_retnet_equals_the_rotation_carried_in_the_state():
    """The same math two ways, the same weights: rotary on q and k at each position (the chunked
    class) against the state turning back by one rotation every token (the spec before
    ``position()``); fp32 rounding apart, outputs and gradients agree over 40 tokens."""
    new, old = retnet(), retnet(ROOT / "tests" / "specs" / "retnet_state_rotation.rnn")
    a = RecurrentLayer(new, seed=0)
    b = RecurrentLayer(old, seed=0)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(0)
    x = torch.randn(2, 40, new.dim, requires_grad=True)
    w = torch.randn(2, 40, new.dim)
    ya, yb = a(x)[0], b(x)[0]
    assert_close("y", ya, yb, 1e-5)
    ga = torch.autograd.grad((ya * w).sum(), [x, *a.parameters()])
    gb = torch.autograd.grad((yb * w).sum(), [x, *b.parameters()])
    for (name, _), da, db in zip([("x", None), *a.named_parameters()], ga, gb):
        assert_close(f"d{name}", da, db, 1e-5)


def test_a_bf16_retnet_multiplies_in_bf16_on_the_chunked_strategy(monkeypatch):
    """Under bf16 autocast the chunked op takes the layer's type, bf16, though the rotated q and k
    reach it in fp32 (sequence values are computed in fp32) and come first among its inputs: taken
    from them, the type made retnet multiply in exact fp32 (64 ms a forward+backward at RetNet_100m
    on an H200, against fla's 2.6). Its output is the layer's type."""
    from archdsl.codegen.run import chunked

    seen = []
    original = chunked.chunked_op

    def spy(chunk, dot, o_type, store, split, half):
        seen.append((dot, o_type, store, split, half))
        return original(chunk, dot, o_type, store, split, half)

    monkeypatch.setattr(chunked, "chunked_op", spy)
    layer = RecurrentLayer(retnet(), backend="triton", strategy="chunked", chunk=16, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = layer(torch.randn(1, 20, layer.ir.dim))
    # o in fp32 (a decay per head: chunked_common.o_dtype); intermediates in the layer's bf16; the
    # scores in two bf16 terms (the readout sums the halves p: tests/test_split_scores.py)
    assert seen == [("bf16", torch.float32, torch.bfloat16, True, False)]
    assert y.dtype == torch.bfloat16


def test_exact_fp32_products_past_a_key_of_128_are_refused_with_a_reason():
    """An fp32 layer's chunked op multiplies exactly; past a padded key axis of 128 those products need
    more shared memory than a GPU has (retnet at --params 100M, key 197, stopped in Triton's
    OutOfResources on an H200). The layer says so, and what to do, before any kernel launches."""
    from archdsl.codegen.run.chunked import IEEE_KEY_MAX, fits_on_gpu

    fits_on_gpu("retnet", "m", IEEE_KEY_MAX, "ieee")  # 128: fits
    for dot in ("tf32", "bf16"):
        fits_on_gpu("retnet", "m", 197, dot)  # tensor-core products: ran in a bf16 layer (round-12, call 3)
    with pytest.raises(ArchdslError) as got:
        fits_on_gpu("retnet", "m", 197, "ieee")
    message = str(got.value)
    assert "retnet" in message and "m = 197 (256 padded" in message
    assert "autocast" in message and "--strategy loop" in message
