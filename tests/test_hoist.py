"""Hoisting the per-token part of a step out of the sequential loop (codegen/hoist.py)."""

import pytest
import torch
from archdsl.codegen import build_cell
from archdsl.codegen.hoist import hoist
from archdsl.codegen.run.runtime import HoistedCell
from kernel_harness import compare_backends

from archdsl.autodiff import extract_cell
from archdsl.ir import Op
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer


def e88(**ov):
    return instantiate(parse_file("specs/e88.rnn"), overrides={"dim": 7, "heads": 2, "n": 3, **ov}).layer


def test_e88_loop_keeps_only_the_recurrence():
    """k, q, the decay and silu(v) leave the loop: what stays are the two contractions with S."""
    part, core = hoist(extract_cell(e88()))
    assert part is not None
    assert set(part.inputs) == {"a", "k", "q", "v"}
    assert sorted(part.graph[i].axes for i in part.outputs.values()) == [
        ("h",),
        ("h", "i"),
        ("h", "i"),
        ("h", "j"),
    ]
    live = core.graph.ancestors([*core.next_state.values(), core.output])
    sums = [i for i in live if core.graph[i].op is Op.SUM]
    assert len(sums) == 2  # sum[i](S * kh) and sum[i](S' * qh); l2norm's sums are hoisted
    assert set(core.inputs) == set(part.outputs) and not core.consts  # A_log, dt_bias: token part


def test_small_per_token_part_stays_in_the_loop():
    """E1's readout gate silu(z) is two ops: not worth a kernel and a round trip through memory."""
    layer = instantiate(parse_file("specs/e1.rnn"), "test").layer
    part, core = hoist(extract_cell(layer))
    assert part is None and core is not None
    part, _ = hoist(extract_cell(layer), force=True)
    assert part is not None


def test_an_outer_product_is_not_stored():
    """A per-token value larger than its inputs is computed in the loop; the cut moves below it."""
    src = """rnn outer
hyper dim = 8
axis i = 3
axis j = 4
project x -> k[i], v[j]
state S[i, j]
S' = tanh(S + l2norm[i](k) * silu(v))
y = sum[i](S')
output y
"""
    from archdsl.lang.parser import parse

    layer = instantiate(parse(src, "outer.rnn")).layer
    part, core = hoist(extract_cell(layer))
    assert part is not None
    assert all(len(part.graph[i].axes) == 1 for i in part.outputs.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hoisted_equals_loop(dtype):
    """The same cell with its per-token part hoisted and computed in the loop: same numbers."""
    from archdsl.codegen.run.loop import build_loop
    from archdsl.codegen.run.strategies import Options

    layer = e88(gate="sigmoid")
    cell = extract_cell(layer)
    hoisted = build_loop(layer, cell, Options(4, None, 1))
    looped = build_loop(layer, cell, Options(4, None, 1), parts=False)
    assert isinstance(hoisted, HoistedCell) and not isinstance(looped, HoistedCell)
    m = RecurrentLayer(layer, seed=0)
    front = {k: v.detach().clone().requires_grad_(True) for k, v in m.frontier_values().items()}
    torch.manual_seed(0)
    ins = {n: torch.randn(2, 9, *(layer.sizes[a] for a in ax)).to(dtype) for n, ax in layer.inputs().items()}
    results = []
    for cc in (hoisted, looped):
        xs = {k: v.clone().requires_grad_(True) for k, v in ins.items()}
        y, final = cc(xs, front)
        loss = (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() + final["S"].sum()
        grads = torch.autograd.grad(loss, [*xs.values(), *front.values()])
        results.append((y.float(), final["S"], *(g.float() for g in grads)))
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_build_cell_hoists_e88_and_reports_it():
    cc = build_cell(e88(), 4, None, 1)
    assert isinstance(cc, HoistedCell)
    assert cc.strategy == "loop"
    # named as the spec names them; silu(v) has no name of its own
    assert sorted(cc.hoisted) == ["alpha[h]", "kh[h, i]", "qh[h, i]", "t0[h, j]"]
    source = cc.path.read_text()
    assert "e88_token_fwd_kernel" in source and "Per token, in parallel kernels before the loop" in source


@pytest.mark.parametrize(
    ("name", "before", "after"), [("gdn", ("h",), ("h", "j")), ("mamba2", (), ("h", "p"))]
)
def test_a_normalising_readout_moves_after_the_loop(name, before, after):
    """RMSNorm over the value axis (GDN) or the channels (Mamba2) would keep the loop from splitting
    them; the loop hands the readout its last splittable value instead."""
    from archdsl.codegen.hoist import split_readout
    from archdsl.codegen.plan import splittable_axes

    cell = extract_cell(instantiate(parse_file(f"specs/{name}.rnn"), "test").layer)
    readout, loop = split_readout(cell)
    assert splittable_axes(cell) == before and splittable_axes(loop) == after
    assert loop.output_axes == after
    live = readout.graph.ancestors([readout.outputs["y"]])
    assert any(readout.graph[i].op is Op.SUM and readout.graph[i].attr in after for i in live)
    live = readout.graph.ancestors([readout.outputs["y"]])
    assert not any(readout.graph[i].op is Op.STATE for i in live)  # y reads the state only through o


def test_a_pointwise_readout_stays_in_the_loop():
    from archdsl.codegen.hoist import split_readout

    part, cell = split_readout(extract_cell(e88(gate="sigmoid")))
    assert part is None and cell.output_axes == ("h", "j")


def test_a_readout_after_the_loop_writes_a_16_bit_layers_type(monkeypatch):
    """The readout kernel writes a bf16 layer's output in bf16 (no fp32 copy to round after it); the
    per-token values the loop reads stay fp32; the layer within the harness' tolerance."""
    from archdsl.codegen.run import runtime

    seen, real = {}, runtime.ParallelPart.forward

    def forward(self, xs, cs):
        outs = real(self, xs, cs)
        seen[self.kind] = {o.dtype for o in outs}
        return outs

    monkeypatch.setattr(runtime.ParallelPart, "forward", forward)
    layer = instantiate(parse_file("specs/gdn.rnn"), "test").layer
    compare_backends(layer, B=1, T=9, dtype=torch.bfloat16, chunk=4, strategy="loop")
    assert seen == {"token": {torch.float32}, "readout": {torch.bfloat16}}
