"""The E88 spec through the reference equals an independent loop written from variants.md §4."""

import pytest
import torch
import torch.nn.functional as F

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer


def e88_by_hand(m: RecurrentLayer, x, heads, n, nv, linear_state=False):
    """Step-by-step E88: [q, k, v] = silu(W_qkv x); S_h = tanh(a S_h + k̂ (v - S_hᵀ k̂)ᵀ); o = S_hᵀ q̂."""
    B, T, _ = x.shape
    w_qkv, w_a = m.proj["0"].weight, m.proj["1"].weight
    A_log, dt_bias = m.params["A_log"], m.params["dt_bias"]
    qkv = F.silu(x @ w_qkv.T)
    q, k, v = qkv.split([heads * n, heads * n, heads * nv], dim=-1)
    q, k, v = q.reshape(B, T, heads, n), k.reshape(B, T, heads, n), v.reshape(B, T, heads, nv)
    a = x @ w_a.T  # [B, T, H]
    S = x.new_zeros(B, heads, n, nv)
    outs = []
    for t in range(T):
        kh = k[:, t] / (k[:, t].norm(dim=-1, keepdim=True) + 1e-6)
        qh = q[:, t] / (q[:, t].norm(dim=-1, keepdim=True) + 1e-6)
        alpha = torch.exp(-torch.exp(A_log) * F.softplus(a[:, t] + dt_bias))  # [B, H]
        delta = v[:, t] - torch.einsum("bhij,bhi->bhj", S, kh)
        S = alpha[..., None, None] * S + kh[..., :, None] * delta[..., None, :]
        S = S if linear_state else torch.tanh(S)
        outs.append(torch.einsum("bhij,bhi->bhj", S, qh))
    y = torch.stack(outs, 1).reshape(B, T, heads * nv)
    return m.out(y), S


@pytest.mark.parametrize("nonlin", ["tanh", "identity"])
def test_e88_matches_hand_written_loop(nonlin):
    torch.manual_seed(0)
    heads, n = 3, 4
    inst = instantiate(
        parse_file("specs/e88.rnn"),
        overrides={"dim": 10, "heads": heads, "n": n, "expansion": 2, "nonlin": nonlin},
    )
    m = RecurrentLayer(inst.layer, seed=1).double()
    x = torch.randn(2, 7, 10, dtype=torch.float64, requires_grad=True)
    y, final = m(x)
    y_ref, s_ref = e88_by_hand(m, x, heads, n, 2 * n, linear_state=nonlin == "identity")
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(final["S"], s_ref, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(y)
    grads = torch.autograd.grad((y * w).sum(), [x, *m.parameters()])
    grads_ref = torch.autograd.grad((y_ref * w).sum(), [x, *m.parameters()])
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-12)
