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


def gradients(
    spec: str, keep: bool, monkeypatch, counts: dict | None = None
) -> tuple[list[torch.Tensor], int]:
    """y's and every gradient (x, the initial state, the parameters) of one fp32 forward+backward of
    the spec's test preset at T 37 (chunks of 16), and how often the forward's first two kernels ran
    (``counts``, where given: how often each of them and the cumulative log-decays' launch ran)."""
    from archdsl.codegen.run import chunked_backward, chunked_common, chunked_kernels

    monkeypatch.setitem(chunked_common.LAUNCH, "keep", keep)
    counts = {} if counts is None else counts

    def counting(mp, name):
        real = getattr(chunked_kernels, name)

        def counted(*args):
            counts[name] = counts.get(name, 0) + 1
            return real(*args)

        mp.setattr(chunked_kernels, name, counted)
        mp.setattr(chunked_backward, name, counted)

    with monkeypatch.context() as mp:  # undone on return: a second call counts into its own dict
        counting(mp, "chunk_states")
        counting(mp, "cumulative_decays")
        return _gradients(spec), counts["chunk_states"]


def _gradients(spec: str) -> list[torch.Tensor]:
    layer = instantiate(parse_file(ROOT / "specs" / f"{spec}.rnn"), "test", {}).layer
    m = RecurrentLayer(layer, backend="triton", seed=0, chunk=16, strategy="chunked")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 37, layer.dim, generator=g, requires_grad=True)
    h0 = {s: torch.randn(2, *(layer.sizes[a] for a in ax), generator=g) for s, ax in layer.states.items()}
    h0 = {s: h.requires_grad_(True) for s, h in h0.items()}
    y, final = m(x, h0)
    loss = (y * torch.randn(y.shape, generator=g)).sum() + sum((f * f).sum() for f in final.values())
    leaves = [x, *h0.values(), *(p for p in m.parameters() if p.requires_grad)]
    return [y.detach(), *torch.autograd.grad(loss, leaves)]


@pytest.mark.parametrize("spec", ["gdn", "mamba2"], ids=["delta-rule", "no-correction"])
def test_kept_states_give_the_rerun_gradients(spec, monkeypatch):
    """The backward reads what the forward kept, the chunk-local cumulative log-decays included
    (one ``cumulative_decays`` launch, not two)."""
    counts_kept, counts_rerun = {}, {}
    kept, n_kept = gradients(spec, True, monkeypatch, counts_kept)
    rerun, n_rerun = gradients(spec, False, monkeypatch, counts_rerun)
    assert (n_kept, n_rerun) == (1, 2)
    assert (counts_kept["cumulative_decays"], counts_rerun["cumulative_decays"]) == (1, 2)
    assert len(kept) == len(rerun) > 3
    for a, b in zip(kept, rerun):
        assert torch.equal(a, b)
        assert a.abs().sum() > 0


@pytest.mark.parametrize("decays", [True, False], ids=["G-kept", "no-G"])
@pytest.mark.parametrize("lowrank", [False, True, "joint", "tied"], ids=["write", "delta", "joint", "tied"])
def test_kept_tensors_have_their_fake_shapes(lowrank, decays, monkeypatch):
    """``torch.library.opcheck``: the op's schema, its fake outputs (the kept tensors' shapes
    included) against the real ones, and its autograd registration; traced whole by
    ``torch.compile`` (its backward through the custom op's autograd, the kept tensors without a
    gradient), the eager values. With ``walk_cumsum`` the chunk-local cumulative log-decays G (fp32,
    as the log-decays) come last; without it there is none to keep."""
    from archdsl.codegen.run import chunked_common
    from archdsl.codegen.run.ops import chunked_op

    monkeypatch.setitem(chunked_common.LAUNCH, "keep", True)
    monkeypatch.setitem(chunked_common.LAUNCH, "walk_cumsum", decays)
    B, H, K, V = 2, 2, 5, 6
    xs, h0 = chunked_op_inputs(lowrank, B=B, H=H, K=K, V=V)
    op = chunked_op(16, "ieee")
    out = op(xs, h0)
    assert [tuple(t.shape) for t in out[2:]] == [(B * H, 2, K, V)] + (
        [(B * H, 32, V), (B * H, 32, K), (B * H, 2, 16, 16)] if lowrank else []
    ) + ([tuple(xs[0].shape)] if decays else [])
    assert out[-1].dtype == torch.float32
    tests = ("test_schema", "test_faketensor", "test_autograd_registration")
    torch.library.opcheck(op.custom, (xs, h0), test_utils=tests)
    do = torch.randn(out[0].shape, generator=torch.Generator().manual_seed(1))
    want = torch.autograd.grad(out[0], [*xs, h0], do)
    f = torch.compile(lambda xs, h0: op(xs, h0)[0], fullgraph=True, backend="aot_eager")
    got = f(xs, h0)
    assert torch.equal(got, out[0])
    for a, b in zip(torch.autograd.grad(got, [*xs, h0], do), want):
        assert torch.equal(a, b)
