"""The chunked forward keeping its chunks' states (and a delta rule's U, W, T⁻¹) for the backward
(``chunked_common.LAUNCH["keep"]``) against the backward that reruns the forward's kernels: the same
gradients to the bit, the kernels run once, and the op's fake shapes are its real ones."""

from pathlib import Path

import pytest
import torch
from kernel_harness import chunked_op_inputs

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer

ROOT = Path(__file__).resolve().parent.parent


def gradients(spec: str, keep: bool, monkeypatch) -> tuple[list[torch.Tensor], int]:
    """y's and every gradient (x, the initial state, the parameters) of one fp32 forward+backward of
    the spec's test preset at T 37 (chunks of 16), and how often the forward's first two kernels ran."""
    from archdsl.codegen.run import chunked_backward, chunked_common, chunked_kernels

    monkeypatch.setitem(chunked_common.LAUNCH, "keep", keep)
    calls = []
    real = chunked_kernels.chunk_states

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(chunked_kernels, "chunk_states", counted)
    monkeypatch.setattr(chunked_backward, "chunk_states", counted)
    layer = instantiate(parse_file(ROOT / "specs" / f"{spec}.rnn"), "test", {}).layer
    m = RecurrentLayer(layer, backend="triton", seed=0, chunk=16, strategy="chunked")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 37, layer.dim, generator=g, requires_grad=True)
    h0 = {s: torch.randn(2, *(layer.sizes[a] for a in ax), generator=g) for s, ax in layer.states.items()}
    h0 = {s: h.requires_grad_(True) for s, h in h0.items()}
    y, final = m(x, h0)
    loss = (y * torch.randn(y.shape, generator=g)).sum() + sum((f * f).sum() for f in final.values())
    leaves = [x, *h0.values(), *(p for p in m.parameters() if p.requires_grad)]
    return [y.detach(), *torch.autograd.grad(loss, leaves)], len(calls)


@pytest.mark.parametrize("spec", ["gdn", "mamba2"], ids=["delta-rule", "no-correction"])
def test_kept_states_give_the_rerun_gradients(spec, monkeypatch):
    kept, n_kept = gradients(spec, True, monkeypatch)
    rerun, n_rerun = gradients(spec, False, monkeypatch)
    assert (n_kept, n_rerun) == (1, 2)
    assert len(kept) == len(rerun) > 3
    for a, b in zip(kept, rerun):
        assert torch.equal(a, b)
        assert a.abs().sum() > 0


@pytest.mark.parametrize("lowrank", [False, True, "joint"], ids=["write", "delta", "joint"])
def test_kept_tensors_have_their_fake_shapes(lowrank, monkeypatch):
    """``torch.library.opcheck``: the op's schema, its fake outputs (the kept tensors' shapes
    included) against the real ones, and its autograd registration; traced whole by
    ``torch.compile`` (its backward through the custom op's autograd, the kept tensors without a
    gradient), the eager values."""
    from archdsl.codegen.run import chunked_common
    from archdsl.codegen.run.ops import chunked_op

    monkeypatch.setitem(chunked_common.LAUNCH, "keep", True)
    B, H, K, V = 2, 2, 5, 6
    xs, h0 = chunked_op_inputs(lowrank, B=B, H=H, K=K, V=V)
    op = chunked_op(16, "ieee")
    out = op(xs, h0)
    assert [tuple(t.shape) for t in out[2:]] == [(B * H, 2, K, V)] + (
        [(B * H, 32, V), (B * H, 32, K), (B * H, 2, 16, 16)] if lowrank else []
    )
    tests = ("test_schema", "test_faketensor", "test_autograd_registration")
    torch.library.opcheck(op.custom, (xs, h0), test_utils=tests)
    do = torch.randn(out[0].shape, generator=torch.Generator().manual_seed(1))
    want = torch.autograd.grad(out[0], [*xs, h0], do)
    f = torch.compile(lambda xs, h0: op(xs, h0)[0], fullgraph=True, backend="aot_eager")
    got = f(xs, h0)
    assert torch.equal(got, out[0])
    for a, b in zip(torch.autograd.grad(got, [*xs, h0], do), want):
        assert torch.equal(a, b)
