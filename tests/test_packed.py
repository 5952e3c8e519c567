"""Packed sequences (``cu_seqlens``): outputs, each sequence's final state and every gradient equal
those of the reference interpreter running the sequences one by one; boundaries fall inside the
loop's checkpoint segments (stride 4) and inside the chunked form's chunks (16). The reference on
every spec; each compiled strategy on the representative specs of kernel_harness.REPRESENTATIVE
(every spec under ``pytest -m exhaustive``). The one-by-one side is the reference's (the kernel
harness holds every compiled strategy to it within the same 1e-5): the compiled layer runs once, packed."""

from __future__ import annotations

import pytest
import torch
from kernel_harness import assert_close, cases_params
from test_decode import DECODE, decode_layer
from test_kernels import CHUNK

from archdsl.layer import RecurrentLayer
from archdsl.layer_io import LayerInputError

CU = [0, 3, 4, 7, 13]  # lengths 3, 1, 3, 6: a sequence of one token, two of the same length


pytestmark = pytest.mark.usefixtures("cache")  # each test its own kernel cache (conftest.py)


def make(path, strategy) -> RecurrentLayer:
    ir = decode_layer(path, strategy)
    if strategy == "reference":
        return RecurrentLayer(ir, seed=0).eval()
    opts = dict(chunk=CHUNK.get(strategy, 4), num_warps=1, strategy=strategy)
    return RecurrentLayer(ir, backend="triton", seed=0, **opts).eval()


def loss(y, finals, w):
    return (y * w).sum() + sum((v * v).sum() for v in finals.values())


@pytest.mark.parametrize(("path", "strategy"), cases_params(DECODE))
def test_packed_equals_one_by_one(path, strategy):
    """By default the reference on every spec (each spec's resets at a boundary, convolution history
    included), persistent and dense on e1 and lstm, loop and chunked on the representative specs
    (every kind of state, history and decay the specs have: kernel_harness.REPRESENTATIVE). A
    boundary is where the kernels restart from the sequence's own initial state, the same code for
    every cell; the rest of the cross product runs under ``-m exhaustive``."""
    layer = make(path, strategy)
    ir = layer.ir
    torch.manual_seed(0)
    N, total = len(CU) - 1, CU[-1]
    x = torch.randn(1, total, ir.dim, requires_grad=True)
    h0 = {
        s: (0.5 * torch.randn(N, *(ir.sizes[a] for a in ax))).requires_grad_() for s, ax in ir.states.items()
    }
    w = torch.randn(1, total, ir.dim)
    params = list(layer.parameters())

    y, finals = layer(x, h0, cu_seqlens=torch.tensor(CU))
    g = torch.autograd.grad(loss(y, finals, w), [x, *h0.values(), *params], allow_unused=True)

    one = RecurrentLayer(ir, seed=0).eval()  # the reference, on the same weights
    one.load_state_dict(layer.state_dict())
    params = list(one.parameters())
    ys, fins = [], {s: [] for s in ir.states}
    for k, (a, b) in enumerate(zip(CU, CU[1:])):
        y_k, f_k = one(x[:, a:b], {s: v[k : k + 1] for s, v in h0.items()})
        ys.append(y_k)
        for s in fins:
            fins[s].append(f_k[s])
    y1, f1 = torch.cat(ys, 1), {s: torch.cat(v) for s, v in fins.items()}
    g1 = torch.autograd.grad(loss(y1, f1, w), [x, *h0.values(), *params], allow_unused=True)

    assert_close("y", y, y1, 1e-5)
    for s in f1:
        assert_close(f"final {s}", finals[s], f1[s], 1e-5)
    names = ["dx", *(f"dh0 {s}" for s in h0), *(f"d{n}" for n, _ in layer.named_parameters())]
    for name, a, b in zip(names, g, g1):
        assert (a is None) == (b is None), name
        if a is not None:
            assert_close(name, a, b, 1e-5)


def test_packed_without_states_and_bad_offsets():
    layer = make(DECODE[0][0], "reference")
    x = torch.randn(1, 13, layer.ir.dim)
    y, finals = layer(x, cu_seqlens=CU)  # a list works too; zero initial states
    y0, _ = layer(x[:, :3])
    assert torch.allclose(y[:, :3], y0, atol=1e-6) and all(v.shape[0] == 4 for v in finals.values())
    for cu, words in [
        ([0, 3, 3, 13], "rise strictly"),
        ([0, 5, 12], "rise strictly"),
        ([1, 13], "rise strictly"),
        (torch.tensor([0.0, 13.0]), "integer"),
    ]:
        with pytest.raises(LayerInputError, match=words):
            layer(x, cu_seqlens=cu)
    with pytest.raises(LayerInputError, match="one row"):
        layer(torch.randn(2, 13, layer.ir.dim), cu_seqlens=CU)
    s = next(iter(layer.ir.states))
    with pytest.raises(LayerInputError, match=f"state '{s}' must be"):
        layer(x, {s: layer.init_state(1)[s]}, cu_seqlens=CU)


def test_the_lm_packs_documents():
    """Two layers: each document's logits and final states as if it ran alone."""
    from archdsl.lm.zoo import ModelConfig, build_model

    lm = build_model(ModelConfig("e88", dim=16, depth=2, sets={"heads": 2, "n": 4})).eval()
    idx = torch.randint(0, 256, (1, 13), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, states = lm.forward_state(idx, cu_seqlens=CU)
        for k, (a, b) in enumerate(zip(CU, CU[1:])):
            alone, st = lm.forward_state(idx[:, a:b])
            assert_close(f"logits {k}", logits[:, a:b], alone, 1e-5)
            for layer in range(2):
                assert_close(f"state {k} {layer}", states[layer]["S"][k : k + 1], st[layer]["S"], 1e-5)
