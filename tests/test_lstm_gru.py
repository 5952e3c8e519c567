"""The lstm and gru specs through the reference equal torch.nn.LSTM / torch.nn.GRU with the same weights.

The layer is W_out cell(W_in x) (variants.md §5); torch's side is the same two maps around torch's cell,
whose weight_ih / bias_ih are the spec's gate projection from u, and weight_hh / bias_hh the spec's
recurrent parameters stacked in torch's gate order. Outputs, final states and every gradient (input,
initial state, every weight) agree in float64 to 1e-10.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer

#: spec -> (torch module, gate names in torch's order, states in torch's order)
CELLS = {
    "lstm": (torch.nn.LSTM, ("i", "f", "g", "o"), ("h", "c")),
    "gru": (torch.nn.GRU, ("r", "z", "n"), ("h",)),
}
B, T, DIM, EXPANSION = 2, 5, 6, 1.5  # d = int(6 * 1.5) = 9: W_in and W_out are not square


def projection_index(m: RecurrentLayer, source: str) -> str:
    (k,) = [str(k) for k, p in enumerate(m.ir.projections) if p.source == source]
    return k


def spec_layer(name: str) -> RecurrentLayer:
    spec = parse_file(ROOT / "specs" / f"{name}.rnn")
    inst = instantiate(spec, overrides={"dim": DIM, "expansion": EXPANSION})
    m = RecurrentLayer(inst.layer, seed=0).double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random everywhere: the zero-initialised W_out would hide the cell
        for p in m.parameters():
            p.copy_(0.4 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return m


def torch_cell(m: RecurrentLayer, name: str) -> torch.nn.RNNBase:
    cls, gates, _ = CELLS[name]
    d = m.ir.sizes["i"]
    ih = m.proj[projection_index(m, "u")]
    assert [n for n, _ in m.ir.projections[int(projection_index(m, "u"))].outputs] == [f"x{g}" for g in gates]
    cell = cls(d, d, batch_first=True).double()
    with torch.no_grad():
        cell.weight_ih_l0.copy_(ih.weight)
        cell.bias_ih_l0.copy_(ih.bias)
        cell.weight_hh_l0.copy_(torch.cat([m.params[f"W_h{g}"] for g in gates]))
        cell.bias_hh_l0.copy_(torch.cat([m.params[f"b_h{g}"] for g in gates]))
    return cell


@pytest.mark.parametrize("name", sorted(CELLS))
def test_matches_torch(name):
    _, gates, state_names = CELLS[name]
    m = spec_layer(name)
    cell = torch_cell(m, name)
    d = m.ir.sizes["i"]
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(B, T, DIM, generator=gen, dtype=torch.float64, requires_grad=True)
    s0 = {s: 0.5 * torch.randn(B, d, generator=gen, dtype=torch.float64) for s in state_names}
    s0 = {s: v.requires_grad_() for s, v in s0.items()}
    w_y = torch.randn(B, T, DIM, generator=gen, dtype=torch.float64)
    w_s = {s: torch.randn(B, d, generator=gen, dtype=torch.float64) for s in state_names}

    # archdsl
    y, final = m(x, state=s0)
    loss = (y * w_y).sum() + sum((final[s] * w_s[s]).sum() for s in state_names)
    w_in, w_out = m.proj[projection_index(m, "x")].weight, m.out.weight
    ih = m.proj[projection_index(m, "u")]
    w_hh = [m.params[f"W_h{g}"] for g in gates]
    b_hh = [m.params[f"b_h{g}"] for g in gates]
    ours = torch.autograd.grad(loss, [x, *s0.values(), w_in, w_out, ih.weight, ih.bias, *w_hh, *b_hh])

    # torch: the same maps around torch's cell
    x2 = x.detach().clone().requires_grad_()
    s2 = {s: v.detach().clone().requires_grad_() for s, v in s0.items()}
    w_in2, w_out2 = w_in.detach().clone().requires_grad_(), w_out.detach().clone().requires_grad_()
    h0 = tuple(s2[s][None] for s in state_names)  # [1, B, d] each
    hs, hT = cell(F.linear(x2, w_in2), h0 if len(h0) > 1 else h0[0])
    y_ref = F.linear(hs, w_out2)
    final_ref = dict(zip(state_names, (t[0] for t in (hT if isinstance(hT, tuple) else (hT,)))))
    loss_ref = (y_ref * w_y).sum() + sum((final_ref[s] * w_s[s]).sum() for s in state_names)
    ref = torch.autograd.grad(loss_ref, [x2, *s2.values(), w_in2, w_out2, *cell.parameters()])

    close = dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y, y_ref, **close)
    for s in state_names:
        torch.testing.assert_close(final[s], final_ref[s], **close)
    n_fixed = 1 + len(state_names) + 2  # x, states, W_in, W_out
    for g, g_ref in zip(ours[:n_fixed], ref[:n_fixed]):
        torch.testing.assert_close(g, g_ref, **close)
    # torch's parameter order: weight_ih, weight_hh, bias_ih, bias_hh
    g_ih_w, g_ih_b = ours[n_fixed], ours[n_fixed + 1]
    g_hh_w = torch.cat(ours[n_fixed + 2 : n_fixed + 2 + len(gates)])
    g_hh_b = torch.cat(ours[n_fixed + 2 + len(gates) :])
    for g, g_ref in zip([g_ih_w, g_hh_w, g_ih_b, g_hh_b], ref[n_fixed:]):
        torch.testing.assert_close(g, g_ref, **close)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_initialisation(name):
    """W_out starts at zero (the layer is the identity of the residual stream at init); the LSTM's forget
    bias is effectively 2, as the research set 1 in both of torch's biases (lstm_baseline.py 88-93)."""
    inst = instantiate(parse_file(ROOT / "specs" / f"{name}.rnn"), preset="test")
    m = RecurrentLayer(inst.layer, seed=0)
    assert torch.count_nonzero(m.out.weight) == 0
    if name == "lstm":
        b_hh = torch.cat([m.params[f"b_h{g}"] for g in CELLS["lstm"][1]])
        bias = m.proj[projection_index(m, "u")].bias + b_hh  # torch's b_ih + b_hh
        d = m.ir.sizes["i"]
        assert torch.equal(bias[d : 2 * d], torch.full((d,), 2.0))  # forget gate: i, [f], g, o
        assert torch.count_nonzero(torch.cat([bias[:d], bias[2 * d :]])) == 0
