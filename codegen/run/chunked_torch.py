"""The chunked algorithm in plain PyTorch: the oracle of the Triton kernels and their backward.

Per head, with ``w_t = exp(g_t)`` (one per head, or one per key channel), the recurrence

    S_t = diag(w_t) S_{t-1} + a_t (b_tᵀ S_{t-1}) + k_t v_tᵀ,     o_t = S_tᵀ q_t

is cut into chunks of C steps. Inside a chunk, with the chunk-local cumulative log-decay
``G_t = Σ_{s≤t} g_s`` (so ``Γ_t = exp(G_t) ≤ 1`` never underflows across chunks) and ``S`` the state
at the chunk's start, the state before step t is a decayed ``S`` plus decayed writes:

    S_{t-1} = Γ_{t-1} S + Σ_{τ<t} (Γ_{t-1}/Γ_τ) ⊙ (a_τ u_τᵀ + k_τ v_τᵀ),     u_τ = b_τᵀ S_{τ-1}.

So the corrections ``U = [u_t]`` solve a unit lower-triangular system (the UT/WY form of a product of
rank-one updates):  ``(I - M_ab) U = B̃ S + M_ak V`` with ``B̃_t = b_t ⊙ Γ_{t-1}`` and the strictly
lower ``M_xy[t, τ] = Σ_i x_t[i] y_τ[i] Γ_{t-1}[i] / Γ_τ[i]``. Then every output and the next chunk's
state are matrix products:

    O = Q̃ S + Q_a U + Q_k V,       Q̃_t = q_t ⊙ Γ_t,  Q_y[t, τ] = Σ_i q_t y_τ Γ_t / Γ_τ  (τ ≤ t)
    S ← Γ_C S + (A ⊙ Γ_C/Γ)ᵀ U + (K ⊙ Γ_C/Γ)ᵀ V.

When the correction and the write share their key (``LinearForm.joint``: ``a = k``, the update
``diag(w) S + k (bᵀS + v)ᵀ``), the two rank-one terms are one: ``U`` is the whole value written,
``(I - M_kb) U = B̃ S + V`` (fla's WY form: ``U = W S + T V``), and

    O = Q̃ S + Q_k U,      S ← Γ_C S + (K ⊙ Γ_C/Γ)ᵀ U,

half the intra-chunk products. The coefficients then come as ``ab = [b]``, or as ``ab = [σ]`` with
σ [B, T, H] one value a token where the read vector is ``σ k`` (tied: ``LinearForm.tie``).

Every product inside a chunk is independent of ``S``, so they are computed for all chunks at once; only
the state passes from chunk to chunk. With one decay per head the decay ratios are an elementwise
``exp(G_t - G_τ)`` mask (never above 1); with a decay per key channel they factor as
``(x ⊙ Γ_t)(y / Γ_τ)ᵀ``, exact while a chunk's cumulative decay stays above ``exp(-80)`` in fp32.
"""

from __future__ import annotations

import torch


def _chunks(x: torch.Tensor, C: int) -> torch.Tensor:
    """[B, T, H, *r] -> [B, H, N, C, *r] (T padded with zeros to a multiple of C)."""
    B, T = x.shape[:2]
    N = -(-T // C)
    if N * C != T:
        x = torch.nn.functional.pad(x, [0, 0] * (x.dim() - 2) + [0, N * C - T])
    x = x.reshape(B, N, C, *x.shape[2:])
    return x.permute(0, 3, 1, 2, *range(4, x.dim()))


def _decay_matrix(x, gx, y, gy, scalar: bool, strict: bool) -> torch.Tensor:
    """``M[t, τ] = Σ_i x_t[i] y_τ[i] exp(gx_t[i] - gy_τ[i])`` for τ < t (``strict``) or τ ≤ t."""
    C = x.shape[-2]
    mask = torch.ones(C, C, dtype=torch.bool, device=x.device).tril(-1 if strict else 0)
    if scalar:
        diff = (gx[..., :, None] - gy[..., None, :]).masked_fill(~mask, float("-inf"))
        return (x @ y.transpose(-1, -2)) * diff.exp()
    m = (x * gx.exp()) @ (y * (-gy).exp()).transpose(-1, -2)
    return m.masked_fill(~mask, 0.0)


def untied(k: torch.Tensor, ab: list) -> list:
    """``ab`` with a tied correction's σ [B, T, H] as its read vectors σ k [B, T, H, K]."""
    return [ab[0][..., None] * k] if len(ab) == 1 and ab[0].dim() == 3 else list(ab)


def chunked_torch(lw, q, k, v, ab, h0, chunk: int):
    """(o [B, T, H, V], final state [B, H, K, V]) of the recurrence above.

    lw: log-decays, [B, T, H] (one per head) or [B, T, H, K]; q, k: [B, T, H, K]; v: [B, T, H, V];
    ab: [] (no correction), [a, b] or [b] (joint: ``a`` is ``k``), each [B, T, H, K], or [σ] (tied:
    [B, T, H], b = σ k); h0: [B, H, K, V].
    Computes in the dtype of its inputs."""
    B, T, H, K = q.shape
    C = chunk
    ab = untied(k, ab)
    scalar = lw.dim() == 3
    g = _chunks(lw, C)
    G = g.cumsum(3)  # inclusive, chunk-local
    Gm = G - g  # the decay before step t
    GC = G[:, :, :, -1:]  # the chunk's total, [B, H, N, 1(, K)]
    e = (lambda x: x[..., None]) if scalar else (lambda x: x)
    qc, kc, vc = _chunks(q, C), _chunks(k, C), _chunks(v, C)
    q_s = qc * e(G).exp()  # Q̃
    k_end = kc * e(GC - G).exp()  # decayed to the chunk's end
    joint = len(ab) == 1
    # O's part from the chunk's own writes without a correction (joint: all of it is in Q_k U)
    inner = 0 if joint else _decay_matrix(qc, G, kc, G, scalar, strict=False) @ vc
    if ab:
        ac, bc = (kc, _chunks(ab[0], C)) if joint else (_chunks(ab[0], C), _chunks(ab[1], C))
        eye = torch.eye(C, dtype=q.dtype, device=q.device)
        lower = eye - _decay_matrix(bc, Gm, ac, G, scalar, strict=True)
        b_s = bc * e(Gm).exp()  # B̃
        W = torch.linalg.solve_triangular(lower, b_s, upper=False, unitriangular=True)
        R0 = vc if joint else _decay_matrix(bc, Gm, kc, G, scalar, strict=True) @ vc  # V or M_ak V
        Uv = torch.linalg.solve_triangular(lower, R0, upper=False, unitriangular=True)
        Qa = _decay_matrix(qc, G, ac, G, scalar, strict=False)
        a_end = ac * e(GC - G).exp()
    S = h0
    outs = []
    for n in range(G.shape[2]):
        o = q_s[:, :, n] @ S + (0 if joint else inner[:, :, n])
        new = 0 if joint else k_end[:, :, n].transpose(-1, -2) @ vc[:, :, n]
        if ab:
            U = W[:, :, n] @ S + Uv[:, :, n]
            o = o + Qa[:, :, n] @ U
            new = new + a_end[:, :, n].transpose(-1, -2) @ U
        decay = GC[:, :, n].exp()
        S = (decay[..., None] if scalar else decay.transpose(-1, -2)) * S + new
        outs.append(o)
    o = torch.stack(outs, 2).flatten(2, 3)[:, :, :T]  # [B, H, T, V]
    return o.transpose(1, 2), S


def sequential_torch(lw, q, k, v, ab, h0):
    """The same recurrence step by step (the definition the chunked forms are tested against)."""
    S, outs = h0, []
    ab = untied(k, ab)
    a, b = ((k, ab[0]) if len(ab) == 1 else ab) if ab else (None, None)
    for t in range(q.shape[1]):
        w = lw[:, t].exp()
        w = w[..., None, None] if lw.dim() == 3 else w[..., None]
        new = w * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        if ab:
            new = new + a[:, t, :, :, None] * (b[:, t, :, :, None] * S).sum(2, keepdim=True)
        S = new
        outs.append((S * q[:, t, :, :, None]).sum(2))
    return torch.stack(outs, 1), S
