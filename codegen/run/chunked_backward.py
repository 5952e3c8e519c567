"""The chunked backward as Triton kernels: the chunked forward run in reverse with transposed products.

Per chunk, with ``S`` the state at its start and ``dS`` the gradient of the state at its end, the
forward of ``codegen/run/chunked_torch.py``

    R = B̃ S + M_ak V,   U = (I - M_ab)⁻¹ R = W S + U₀,   O = Q̃ S + Q_k V + Q_a U,
    S_next = Γ_C S + K_endᵀ V + A_endᵀ U

gives, in reverse (products transposed, the triangular inverse transposed):

    dU = Q_aᵀ dO + A_end dS,   dR = (I - M_ab)⁻ᵀ dU,   dS_prev = Q̃ᵀ dO + Wᵀ dU + Γ_C dS,
    dV = Q_kᵀ dO + M_akᵀ dR + K_end dS,
    dQ_k = dO Vᵀ, dQ_a = dO Uᵀ, dM_ak = dR Vᵀ, dM_ab = dR Uᵀ (masked like their matrices),
    dQ̃ = dO Sᵀ, dB̃ = dR Sᵀ, dK_end = V dSᵀ, dA_end = U dSᵀ, dΓ_C = Σ_j S ⊙ dS,

and each decayed matrix ``M[t, τ] = Σ_i x_t y_τ exp(gx_t - gy_τ)`` hands its gradient to x, y and the
cumulative log-decays; ``dg`` is the reverse cumulative sum of ``dG`` (the decays are chunk-local).

Three steps: the forward's kernels 1 and 2 rerun (every chunk's start state and corrections);
``chunk_dstates_kernel`` walks the chunks backwards with ``dS`` in fp32 registers and stores it at
every chunk's end (the only sequential work: three ``tl.dot`` a chunk); ``chunk_grads_kernel`` then
computes every per-token gradient of every chunk at once from its ``S`` and ``dS``. The gradients that
sum over the value axis (dq, dk, da, db, dg) are written per block of value columns and summed
afterwards, so nothing is accumulated with atomics and the result is deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from archdsl.codegen.run.chunked_common import (
    LAUNCH,
    _chunk_decays,
    _decay_state,
    _decayed,
    _from_start,
    _meta,
    _to_end,
)
from archdsl.codegen.run.chunked_kernels import chunk_states


@triton.jit
def _decayed_bwd(dM, x, y, gx, gy, mask, rc, SHIFTED: tl.constexpr, SCALAR: tl.constexpr,
                 PREC: tl.constexpr):  # fmt: skip
    """(dx, dy, dg) of M[t, τ] = Σ_i x_t[i] y_τ[i] exp(gx_t[i] - gy_τ[i]) (0 outside ``mask``), with
    gy = G and gx = G (or, ``SHIFTED``, the decay before the step G - g). ``dg``: the gradient of the
    per-step log-decays g, summed where it is exact: M[t, τ] depends on g_s for τ < s ≤ t (τ < s < t)."""
    # one return after a constexpr if/else: Triton 3.6 compiles the statements after an early return
    if SCALAR:
        E = tl.exp(tl.where(mask, gx[:, None] - gy[None, :], float("-inf")))
        dP = dM * E
        Z = dP * tl.dot(x, tl.trans(y), input_precision=PREC)
        dx = tl.dot(dP, y, input_precision=PREC)
        dy = tl.dot(tl.trans(dP), x, input_precision=PREC)
        # A[t, s] = Σ_{τ<s} Z[t, τ], then dg_s = Σ_{t ≥ s} A[t, s]: only the terms that depend on g_s
        A = tl.dot(Z, tl.where(rc[:, None] < rc[None, :], 1.0, 0.0), input_precision=PREC)
        if SHIFTED:
            dg = tl.sum(tl.where(rc[:, None] > rc[None, :], A, 0.0), 0)
        else:
            dg = tl.sum(tl.where(rc[:, None] >= rc[None, :], A, 0.0), 0)
    else:
        xh, yh = x * tl.exp(gx), y * tl.exp(-gy)
        dMm = tl.where(mask, dM, 0.0)
        dxh = tl.dot(dMm, yh, input_precision=PREC)
        dyh = tl.dot(tl.trans(dMm), xh, input_precision=PREC)
        dx, dy, dgx = dxh * tl.exp(gx), dyh * tl.exp(-gy), dxh * xh
        dg = tl.cumsum(dgx, 0, reverse=True) - tl.cumsum(dyh * yh, 0, reverse=True)
        if SHIFTED:
            dg -= dgx
    return dx, dy, dg


@triton.jit
def _rowsum(x, SCALAR: tl.constexpr):
    """A decay's gradient: summed over the key axis when the decay is one per head."""
    if SCALAR:
        out = tl.sum(x, 1)
    else:
        out = x
    return out


@triton.jit
def _correction_bwd(S, dS, dO, qq, kk, vv, aa, bb, g, G, eEnd, inv, U, causal, strict, rc,
                    SCALAR: tl.constexpr, PREC: tl.constexpr):  # fmt: skip
    """The rank-one correction's share of a chunk's per-token gradients: its parts of dv, dq, dk;
    da, db; its part of dg (the per-step log-decays, from its decayed matrices) and of te (the
    end-of-chunk decays) and dGm (the decays before each step, G - g)."""
    Gm = G - g
    if SCALAR:
        eGm = tl.exp(Gm)[:, None]
    else:
        eGm = tl.exp(Gm)
    b_s, a_end = bb * eGm, aa * eEnd
    Mak = _decayed(bb, kk, Gm, G, strict, SCALAR, PREC)
    Qa = _decayed(qq, aa, G, G, causal, SCALAR, PREC)
    dU = tl.dot(tl.trans(Qa), dO, input_precision=PREC) + tl.dot(a_end, dS, input_precision=PREC)
    dR = tl.dot(tl.trans(inv), dU, input_precision=PREC)
    db_s = tl.dot(dR, tl.trans(S), input_precision=PREC)
    da_end = tl.dot(U, tl.trans(dS), input_precision=PREC)
    dQa = tl.where(causal, tl.dot(dO, tl.trans(U), input_precision=PREC), 0.0)
    dMak = tl.where(strict, tl.dot(dR, tl.trans(vv), input_precision=PREC), 0.0)
    dMab = tl.where(strict, tl.dot(dR, tl.trans(U), input_precision=PREC), 0.0)
    dq2, da2, dg2 = _decayed_bwd(dQa, qq, aa, G, G, causal, rc, False, SCALAR, PREC)
    db3, dk3, dg3 = _decayed_bwd(dMak, bb, kk, Gm, G, strict, rc, True, SCALAR, PREC)
    db4, da4, dg4 = _decayed_bwd(dMab, bb, aa, Gm, G, strict, rc, True, SCALAR, PREC)
    return (
        tl.dot(tl.trans(Mak), dR, input_precision=PREC),
        dq2,
        dk3,
        da_end * eEnd + da2 + da4,
        db_s * eGm + db3 + db4,
        dg2 + dg3 + dg4,
        _rowsum(da_end * a_end, SCALAR),
        _rowsum(db_s * b_s, SCALAR),
    )


@triton.jit
def chunk_dstates_kernel(
    lw, q, a, w_in, do, dht, dstates, dh0, T, H, K, V,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, LOWRANK: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """The chunks in reverse: stores the gradient of each chunk's end state, passes it backwards."""
    i_bh, i_v = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    rc, rk, rv = tl.arange(0, C), tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    mk, mv = rk < K, rv < V
    pS, mS = rk[:, None] * V + rv[None, :], mk[:, None] & mv[None, :]
    dS = tl.load(dht + i_bh * K * V + pS, mask=mS, other=0.0)
    N = tl.cdiv(T, C)
    for i in range(0, N):
        n = N - 1 - i
        chunk = i_bh * N + n
        tl.store(dstates + chunk * K * V + pS, dS, mask=mS)
        t = n * C + rc
        mt = t < T
        row = (i_b * T + t) * H + i_h
        pk, mtk = row[:, None] * K + rk[None, :], mt[:, None] & mk[None, :]
        qq = tl.load(q + pk, mask=mtk, other=0.0)
        dO = tl.load(do + row[:, None] * V + rv[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
        g, G, GC = _chunk_decays(lw, row, pk, mt, mtk, SCALAR)
        dS_prev = tl.dot(tl.trans(_from_start(qq, G, SCALAR)), dO, input_precision=PREC)
        if LOWRANK:
            aa = tl.load(a + pk, mask=mtk, other=0.0)
            Qa = _decayed(qq, aa, G, G, rc[:, None] >= rc[None, :], SCALAR, PREC)
            dU = tl.dot(tl.trans(Qa), dO, input_precision=PREC)
            dU += tl.dot(_to_end(aa, G, GC, SCALAR), dS, input_precision=PREC)
            W = tl.load(w_in + (chunk * C + rc)[:, None] * K + rk[None, :], mask=mk[None, :], other=0.0)
            dS_prev += tl.dot(tl.trans(W), dU, input_precision=PREC)
        dS = dS_prev + _decay_state(dS, GC, SCALAR)
    tl.store(dh0 + i_bh * K * V + pS, dS, mask=mS)


@triton.jit
def chunk_grads_kernel(
    lw, q, k, v, a, b, states, dstates, u_in, inv_in, do,
    dlw, dq, dk, dv, da, db, T, H, K, V,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, CORRECTION: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Every chunk at once: the per-token gradients from the chunk's start state and end gradient;
    ``CORRECTION``: the rank-one correction's share (a second launch, so that neither holds both
    shares' tiles at once), else the rest."""
    i_bh, n, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    B, NV = tl.num_programs(0) // H, tl.num_programs(2)
    N = tl.cdiv(T, C)
    rc, rk, rv = tl.arange(0, C), tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    mk, mv = rk < K, rv < V
    causal = rc[:, None] >= rc[None, :]
    chunk = i_bh * N + n
    pS, mS = chunk * K * V + rk[:, None] * V + rv[None, :], mk[:, None] & mv[None, :]
    S = tl.load(states + pS, mask=mS, other=0.0)
    dS = tl.load(dstates + pS, mask=mS, other=0.0)
    t = n * C + rc
    mt = t < T
    row = (i_b * T + t) * H + i_h
    pk, mtk = row[:, None] * K + rk[None, :], mt[:, None] & mk[None, :]
    pv, mtv = row[:, None] * V + rv[None, :], mt[:, None] & mv[None, :]
    qq = tl.load(q + pk, mask=mtk, other=0.0)
    kk = tl.load(k + pk, mask=mtk, other=0.0)
    vv = tl.load(v + pv, mask=mtv, other=0.0)
    dO = tl.load(do + pv, mask=mtv, other=0.0)
    g, G, GC = _chunk_decays(lw, row, pk, mt, mtk, SCALAR)
    if SCALAR:
        eEnd = tl.exp(GC - G)[:, None]
    else:
        eEnd = tl.exp(GC[None, :] - G)
    # dg_s = Σ_{t ≥ s} dG_t + Σ_{t < s} te_t + Σ_{t > s} dGm_t + Γ_C Σ S ⊙ dS (+ the decayed
    # matrices' share): each sum scanned directly (a total minus a cumulative sum would cancel)
    if CORRECTION:
        part = (NV + i_v) * B * T * H  # this launch's and value block's slice of the partial sums
        aa = tl.load(a + pk, mask=mtk, other=0.0)
        bb = tl.load(b + pk, mask=mtk, other=0.0)
        inv = tl.load(inv_in + (chunk * C + rc[:, None]) * C + rc[None, :])
        U = tl.load(u_in + (chunk * C + rc)[:, None] * V + rv[None, :], mask=mv[None, :], other=0.0)
        strict = rc[:, None] > rc[None, :]
        dvv, dqq, dkk, daa, dbb, dg, te, dGm = _correction_bwd(
            S, dS, dO, qq, kk, vv, aa, bb, g, G, eEnd, inv, U, causal, strict, rc, SCALAR, PREC
        )
        dg += (tl.cumsum(te, 0) - te) + (tl.cumsum(dGm, 0, reverse=True) - dGm)
        tl.store(da + i_v * B * T * H * K + pk, daa, mask=mtk)
        tl.store(db + i_v * B * T * H * K + pk, dbb, mask=mtk)
    else:
        part = i_v * B * T * H
        if SCALAR:
            eG = tl.exp(G)[:, None]
        else:
            eG = tl.exp(G)
        q_s, k_end = qq * eG, kk * eEnd
        Qk = _decayed(qq, kk, G, G, causal, SCALAR, PREC)
        dq_s = tl.dot(dO, tl.trans(S), input_precision=PREC)
        dk_end = tl.dot(vv, tl.trans(dS), input_precision=PREC)
        dvv = tl.dot(tl.trans(Qk), dO, input_precision=PREC) + tl.dot(k_end, dS, input_precision=PREC)
        dQk = tl.where(causal, tl.dot(dO, tl.trans(vv), input_precision=PREC), 0.0)
        dq_, dk_, dg = _decayed_bwd(dQk, qq, kk, G, G, causal, rc, False, SCALAR, PREC)
        dqq = dq_s * eG + dq_
        dkk = dk_end * eEnd + dk_
        te = _rowsum(dk_end * k_end, SCALAR)
        dg += tl.cumsum(_rowsum(dq_s * q_s, SCALAR), 0, reverse=True) + (tl.cumsum(te, 0) - te)
        if SCALAR:
            dg += tl.sum(tl.sum(S * dS, 1), 0) * tl.exp(GC)
        else:
            dg += (tl.sum(S * dS, 1) * tl.exp(GC))[None, :]
    if SCALAR:
        tl.store(dlw + part + row, dg, mask=mt)
    else:
        tl.store(dlw + part * K + pk, dg, mask=mtk)
    tl.store(dq + part * K + pk, dqq, mask=mtk)
    tl.store(dk + part * K + pk, dkk, mask=mtk)
    tl.store(dv + CORRECTION * B * T * H * V + pv, dvv, mask=mtv)  # one value block each: no partials


def chunked_backward(lw, q, k, v, ab, h0, do, dht, chunk: int, precise: bool) -> list:
    """[dlw, dq, dk, dv, *dab, dh0] (fp32) of the chunked recurrence, from the Triton kernels."""
    lw, q, k, v, h0, do, dht = (x.contiguous() for x in (lw, q, k, v, h0, do, dht))
    ab = [x.contiguous() for x in ab]
    B, T, H, K = q.shape
    V = v.shape[-1]
    meta = _meta(lw, q, v, ab, chunk, precise)
    NV = triton.cdiv(V, meta["BV"])
    states, _, U, W, inv = chunk_states(lw, q, k, v, ab, h0, chunk, precise)
    N = states.shape[1]
    dev = q.device
    dstates = torch.empty_like(states)
    dh0 = torch.empty(B, H, K, V, device=dev)
    a, b = ab if ab else (q, q)
    chunk_dstates_kernel[(B * H, NV)](
        lw, q, a, W if ab else q, do, dht, dstates, dh0, T, H, K, V, LOWRANK=bool(ab),
        num_stages=LAUNCH["stages"], **meta,
    )  # fmt: skip
    launches = 2 if ab else 1  # the rest, then the rank-one correction's share
    per_block = [torch.empty(launches * NV, *x.shape, device=dev) for x in (lw, q, k)]
    dv = torch.empty(launches, B, T, H, V, device=dev)
    dab = [torch.empty(NV, *x.shape, device=dev) for x in ab]
    da, db = dab if ab else (dv, dv)
    for correction in (False, True)[:launches]:
        chunk_grads_kernel[(B * H, N, NV)](
            lw, q, k, v, a, b, states, dstates, U if ab else q, inv if ab else q, do,
            *per_block, dv, da, db, T, H, K, V, CORRECTION=correction, **meta,
        )  # fmt: skip
    summed = [x.sum(0) for x in (*per_block, dv, *dab)]
    return [*summed, dh0]
