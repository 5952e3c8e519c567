"""The chunked backward as Triton kernels: the chunked forward run in reverse with transposed products.

Per chunk, with ``S`` the state at its start (recomputed by the forward kernel, one state per chunk,
never one per step) and ``dS`` the gradient of the state at its end, the forward of
``codegen/chunked_torch.py``

    R = B̃ S + M_ak V,   U = (I - M_ab)⁻¹ R,   O = Q̃ S + Q_k V + Q_a U,
    S_next = Γ_C S + K_endᵀ V + A_endᵀ U

gives, in reverse (products transposed, the triangular inverse transposed):

    dU = Q_aᵀ dO + A_end dS,   dR = (I - M_ab)⁻ᵀ dU,   dS_prev = Q̃ᵀ dO + B̃ᵀ dR + Γ_C dS,
    dV = Q_kᵀ dO + M_akᵀ dR + K_end dS,
    dQ_k = dO Vᵀ, dQ_a = dO Uᵀ, dM_ak = dR Vᵀ, dM_ab = dR Uᵀ (masked like their matrices),
    dQ̃ = dO Sᵀ, dB̃ = dR Sᵀ, dK_end = V dSᵀ, dA_end = U dSᵀ, dΓ_C = Σ_j S ⊙ dS,

and each decayed matrix ``M[t, τ] = Σ_i x_t y_τ exp(gx_t - gy_τ)`` hands its gradient to x, y and the
cumulative log-decays; ``dg`` is the reverse cumulative sum of ``dG`` (the decays are chunk-local).
One program per (batch × head, block of value columns) walks the chunks backwards with ``dS`` in fp32
registers; the per-token gradients that sum over the value axis (dq, dk, da, db, dg) are written per
value block and summed afterwards, so nothing is accumulated with atomics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .chunked_kernels import _decayed, _unit_lower_inverse, blocks, chunked_forward, warps


@triton.jit
def _decayed_bwd(dM, x, y, gx, gy, mask, SCALAR: tl.constexpr, PREC: tl.constexpr):
    """(dx, dy, dgx, dgy) of M[t, τ] = Σ_i x_t[i] y_τ[i] exp(gx_t[i] - gy_τ[i]) (0 outside ``mask``)."""
    # one return after a constexpr if/else: Triton 3.6 compiles the statements after an early return
    if SCALAR:
        E = tl.exp(tl.where(mask, gx[:, None] - gy[None, :], float("-inf")))
        dP = dM * E
        Z = dP * tl.dot(x, tl.trans(y), input_precision=PREC)
        dx = tl.dot(dP, y, input_precision=PREC)
        dy = tl.dot(tl.trans(dP), x, input_precision=PREC)
        dgx, dgy = tl.sum(Z, 1), -tl.sum(Z, 0)
    else:
        xh, yh = x * tl.exp(gx), y * tl.exp(-gy)
        dMm = tl.where(mask, dM, 0.0)
        dxh = tl.dot(dMm, yh, input_precision=PREC)
        dyh = tl.dot(tl.trans(dMm), xh, input_precision=PREC)
        dx, dy, dgx, dgy = dxh * tl.exp(gx), dyh * tl.exp(-gy), dxh * xh, -dyh * yh
    return dx, dy, dgx, dgy


@triton.jit
def _rowsum(x, SCALAR: tl.constexpr):
    """A decay's gradient: summed over the key axis when the decay is one per head."""
    if SCALAR:
        out = tl.sum(x, 1)
    else:
        out = x
    return out


@triton.jit
def _correction_bwd(S, dS, dO, qq, kk, vv, aa, bb, g, G, eEnd, causal, strict, eye, LOG2C: tl.constexpr,
                    SCALAR: tl.constexpr, PREC: tl.constexpr):  # fmt: skip
    """The rank-one correction's share of a chunk's backward: its parts of dS_prev, dv, dq, dk; da, db;
    its parts of dG (the cumulative log-decays G), of te (the end-of-chunk decays) and dGm (of G - g)."""
    Gm = G - g
    if SCALAR:
        eGm = tl.exp(Gm)[:, None]
    else:
        eGm = tl.exp(Gm)
    b_s, a_end = bb * eGm, aa * eEnd
    inv = _unit_lower_inverse(_decayed(bb, aa, Gm, G, strict, SCALAR, PREC), eye, LOG2C, PREC)
    Mak = _decayed(bb, kk, Gm, G, strict, SCALAR, PREC)
    Qa = _decayed(qq, aa, G, G, causal, SCALAR, PREC)
    U = tl.dot(
        inv,
        tl.dot(b_s, S, input_precision=PREC) + tl.dot(Mak, vv, input_precision=PREC),
        input_precision=PREC,
    )
    dU = tl.dot(tl.trans(Qa), dO, input_precision=PREC) + tl.dot(a_end, dS, input_precision=PREC)
    dR = tl.dot(tl.trans(inv), dU, input_precision=PREC)
    db_s = tl.dot(dR, tl.trans(S), input_precision=PREC)
    da_end = tl.dot(U, tl.trans(dS), input_precision=PREC)
    dQa = tl.where(causal, tl.dot(dO, tl.trans(U), input_precision=PREC), 0.0)
    dMak = tl.where(strict, tl.dot(dR, tl.trans(vv), input_precision=PREC), 0.0)
    dMab = tl.where(strict, tl.dot(dR, tl.trans(U), input_precision=PREC), 0.0)
    dq2, da2, dGx2, dGy2 = _decayed_bwd(dQa, qq, aa, G, G, causal, SCALAR, PREC)
    db3, dk3, dGm3, dGy3 = _decayed_bwd(dMak, bb, kk, Gm, G, strict, SCALAR, PREC)
    db4, da4, dGm4, dGy4 = _decayed_bwd(dMab, bb, aa, Gm, G, strict, SCALAR, PREC)
    dGm = _rowsum(db_s * b_s, SCALAR) + dGm3 + dGm4
    dG = dGx2 + dGy2 + dGy3 + dGy4
    return (
        tl.dot(tl.trans(b_s), dR, input_precision=PREC),
        tl.dot(tl.trans(Mak), dR, input_precision=PREC),
        dq2,
        dk3,
        da_end * eEnd + da2 + da4,
        db_s * eGm + db3 + db4,
        dG,
        _rowsum(da_end * a_end, SCALAR),
        dGm,
    )


@triton.jit
def chunked_bwd_kernel(
    lw, q, k, v, a, b, states, do, dht,
    dlw, dq, dk, dv, da, db, dh0, T, H, K, V,
    C: tl.constexpr, LOG2C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, LOWRANK: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    i_bh, i_v = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    B = tl.num_programs(0) // H
    rc, rk, rv = tl.arange(0, C), tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    mk, mv = rk < K, rv < V
    causal = rc[:, None] >= rc[None, :]
    strict = rc[:, None] > rc[None, :]
    eye = tl.where(rc[:, None] == rc[None, :], 1.0, 0.0)
    last = rc == C - 1
    pS, mS = (i_bh * K + rk[:, None]) * V + rv[None, :], mk[:, None] & mv[None, :]
    dS = tl.load(dht + pS, mask=mS, other=0.0)
    N = tl.cdiv(T, C)
    part = i_v * B * T * H  # this value block's slice of the per-block partial gradients
    for i in range(0, N):
        n = N - 1 - i
        S = tl.load(states + (i_bh * N + n) * K * V + rk[:, None] * V + rv[None, :], mask=mS, other=0.0)
        t = n * C + rc
        mt = t < T
        row = (i_b * T + t) * H + i_h
        pk, mtk = row[:, None] * K + rk[None, :], mt[:, None] & mk[None, :]
        pv, mtv = row[:, None] * V + rv[None, :], mt[:, None] & mv[None, :]
        qq = tl.load(q + pk, mask=mtk, other=0.0)
        kk = tl.load(k + pk, mask=mtk, other=0.0)
        vv = tl.load(v + pv, mask=mtv, other=0.0)
        dO = tl.load(do + pv, mask=mtv, other=0.0)
        if SCALAR:
            g = tl.load(lw + row, mask=mt, other=0.0)
        else:
            g = tl.load(lw + pk, mask=mtk, other=0.0)
        G = tl.cumsum(g, 0)
        GC = tl.sum(g, 0)
        if SCALAR:
            eG, eEnd = tl.exp(G)[:, None], tl.exp(GC - G)[:, None]
        else:
            eG, eEnd = tl.exp(G), tl.exp(GC[None, :] - G)
        w_end = tl.exp(GC)
        q_s, k_end = qq * eG, kk * eEnd
        Qk = _decayed(qq, kk, G, G, causal, SCALAR, PREC)
        dq_s = tl.dot(dO, tl.trans(S), input_precision=PREC)
        dk_end = tl.dot(vv, tl.trans(dS), input_precision=PREC)
        dvv = tl.dot(tl.trans(Qk), dO, input_precision=PREC) + tl.dot(k_end, dS, input_precision=PREC)
        dS_prev = tl.dot(tl.trans(q_s), dO, input_precision=PREC)
        dQk = tl.where(causal, tl.dot(dO, tl.trans(vv), input_precision=PREC), 0.0)
        dq_, dk_, dGx, dGy = _decayed_bwd(dQk, qq, kk, G, G, causal, SCALAR, PREC)
        dqq = dq_s * eG + dq_
        dkk = dk_end * eEnd + dk_
        dG = _rowsum(dq_s * q_s, SCALAR) + dGx + dGy
        te = _rowsum(dk_end * k_end, SCALAR)
        if LOWRANK:
            aa = tl.load(a + pk, mask=mtk, other=0.0)
            bb = tl.load(b + pk, mask=mtk, other=0.0)
            dS_a, dv_a, dq_a, dk_a, daa, dbb, dG_a, te_a, dGm = _correction_bwd(
                S, dS, dO, qq, kk, vv, aa, bb, g, G, eEnd, causal, strict, eye, LOG2C, SCALAR, PREC
            )
            dS_prev += dS_a
            dvv += dv_a
            dqq += dq_a
            dkk += dk_a
            dG += dG_a + dGm  # Gm = G - g: dGm reaches G here and g below
            te += te_a
            tl.store(da + part * K + pk, daa, mask=mtk)
            tl.store(db + part * K + pk, dbb, mask=mtk)
        else:
            dGm = tl.zeros_like(dG)
        dwS = S * dS  # the chunk's total decay Γ_C scales the whole state
        if SCALAR:
            dGC = tl.sum(te, 0) + tl.sum(tl.sum(dwS, 1), 0) * w_end
            dG = dG - te + tl.where(last, dGC, 0.0)
            dS = dS_prev + w_end * dS
        else:
            dGC = tl.sum(te, 0) + tl.sum(dwS, 1)[None, :] * w_end[None, :]
            dG = dG - te + tl.where(last[:, None], dGC, 0.0)
            dS = dS_prev + w_end[:, None] * dS
        dg = tl.sum(dG, 0) - tl.cumsum(dG, 0) + dG - dGm  # Σ_{t ≥ s} dG_t - dGm_s
        if SCALAR:
            tl.store(dlw + part + row, dg, mask=mt)
        else:
            tl.store(dlw + part * K + pk, dg, mask=mtk)
        tl.store(dq + part * K + pk, dqq, mask=mtk)
        tl.store(dk + part * K + pk, dkk, mask=mtk)
        tl.store(dv + pv, dvv, mask=mtv)
    tl.store(dh0 + pS, dS, mask=mS)


def chunked_backward(lw, q, k, v, ab, h0, do, dht, chunk: int, precise: bool) -> list:
    """[dlw, dq, dk, dv, *dab, dh0] (fp32) of the chunked recurrence, from the Triton kernels."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    BK, BV = blocks(K, V)
    NV = triton.cdiv(V, BV)
    states, _ = chunked_forward(lw, q, k, v, ab, h0, chunk, precise, states=True)
    dev = q.device
    per_block = [torch.empty(NV, *x.shape, device=dev) for x in (lw, q, k, *ab)]
    dv, dh0 = torch.empty(B, T, H, V, device=dev), torch.empty(B, H, K, V, device=dev)
    a, b = ab if ab else (q, q)
    da, db = per_block[3:] if ab else (dv, dv)
    chunked_bwd_kernel[(B * H, NV)](
        *(x.contiguous() for x in (lw, q, k, v, a, b)), states, do.contiguous(), dht.contiguous(),
        per_block[0], per_block[1], per_block[2], dv, da, db, dh0, T, H, K, V,
        C=chunk, LOG2C=chunk.bit_length() - 1, BK=BK, BV=BV,
        SCALAR=lw.dim() == 3, LOWRANK=bool(ab), PREC="ieee" if precise else "tf32",
        num_warps=warps(K),
    )  # fmt: skip
    summed = [x.sum(0) for x in per_block]
    return [summed[0], summed[1], summed[2], dv, *summed[3:], dh0]
