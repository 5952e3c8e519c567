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

The steps: every chunk's start state and corrections from the forward (kept by it) or from its
kernels 1 and 2 run again (``LAUNCH["keep"]``, ``codegen/run/ops.py``);
``chunk_dstates_kernel`` walks the chunks backwards with ``dS`` in fp32 registers and stores it at
every chunk's end (the only sequential work: one ``tl.dot`` a chunk, three with a correction). What
does not depend on ``dS`` stays out of the walk: with a correction, ``chunk_dqa_kernel`` first
computes every chunk's Q_aᵀ dO at once, the walk adds A_end dS and stores the whole dU. Then two
kernels compute every chunk's per-token gradients at once, each over one block of one axis and
looping over the other, so that no program holds a whole [K, V] state or every gradient's tiles at
once:

- ``chunk_dv_kernel`` (a block of value columns; the key axis in blocks): dv, and the corrections'
  gradient dR = (I - M_ab)⁻ᵀ dU from the walk's dU, which it stores; in a joint delta rule (a is k,
  U = T(B̃ S + V)) dv is dR, and ``chunk_dr_kernel`` computes it alone;
- without a correction, ``chunk_dqk_kernel`` (a block of the key axis; the value axis in blocks): dq,
  dk and the log-decays' gradient; each key block's program sums the [C, C] product dO Vᵀ over the
  value axis itself. With a correction, ``codegen/run/chunked_dqk.py``'s two kernels: the four [C, C]
  matrices (dO Vᵀ, dO Uᵀ, dR Vᵀ, dR Uᵀ) once per chunk (and, with one decay per head, their share of
  the decay gradient by a scan, not a product with a 0/1 matrix), then dq, dk, da, db in key blocks
  of 64. Both sum their products with the states over the value axis in one helper
  (``chunked_dqk._state_products``).

Each gradient is written once by the one program that owns its block; only a head's decay gradient
(a sum over the key axis) is written as one partial sum per key block (the split form: one more, the
matrices' share) and summed afterwards. Nothing is accumulated with atomics, so the result is
deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from archdsl.codegen.run.chunked_common import (
    LAUNCH,
    _chunk_decays,
    _decay_grad_scan,
    _decay_state,
    _dot,
    _from_start,
    _head_decays,
    _masked,
    _meta,
    _rowsum,
    _tile,
    _to_end,
    _wide_dot,
    correction,
    kernel_launch,
    key_block,
    strides,
    token_launch,
    walk_grid,
    walk_launch,
)
from archdsl.codegen.run.chunked_dqk import _state_products, dqkab
from archdsl.codegen.run.chunked_kernels import (
    _cumulative_decays,
    chunk_states,
    cumulative_decays,
    parallel_decays,
)


@triton.jit
def _decayed_bwd(dM, x, y, gx, gy, mask, rc, SHIFTED: tl.constexpr, SCALAR: tl.constexpr,
                 DOT: tl.constexpr, SCAN: tl.constexpr):  # fmt: skip
    """(dx, dy, dg) of M[t, τ] = Σ_i x_t[i] y_τ[i] exp(gx_t[i] - gy_τ[i]) (0 outside ``mask``), with
    gy = G and gx = G (or, ``SHIFTED``, the decay before the step G - g). ``dg``: the gradient of the
    per-step log-decays g, summed where it is exact: M[t, τ] depends on g_s for τ < s ≤ t (τ < s < t)."""
    # one return after a constexpr if/else: Triton 3.6 compiles the statements after an early return
    if SCALAR:
        E = tl.exp(tl.where(mask, gx[:, None] - gy[None, :], float("-inf")))
        dP = dM * E
        Z = dP * _dot(x, tl.trans(y), DOT)
        dx = _dot(dP, y, DOT)
        dy = _dot(tl.trans(dP), x, DOT)
        if SCAN:  # LAUNCH["dg_scan"]
            dg = _decay_grad_scan(Z, rc, SHIFTED)
        else:
            # A[t, s] = Σ_{τ<s} Z[t, τ], then dg_s = Σ_{t ≥ s} A[t, s]: only the terms that depend on g_s
            A = _wide_dot(Z, tl.where(rc[:, None] < rc[None, :], 1.0, 0.0), DOT)
            if SHIFTED:
                dg = tl.sum(tl.where(rc[:, None] > rc[None, :], A, 0.0), 0)
            else:
                dg = tl.sum(tl.where(rc[:, None] >= rc[None, :], A, 0.0), 0)
    else:
        xh, yh = x * tl.exp(gx), y * tl.exp(-gy)
        dMm = tl.where(mask, dM, 0.0)
        dxh = _wide_dot(dMm, yh, DOT)
        dyh = _wide_dot(tl.trans(dMm), xh, DOT)
        dx, dy, dgx = dxh * tl.exp(gx), dyh * tl.exp(-gy), dxh * xh
        dg = tl.cumsum(dgx, 0, reverse=True) - tl.cumsum(dyh * yh, 0, reverse=True)
        if SHIFTED:
            dg -= dgx
    return dx, dy, dg


@triton.jit
def chunk_dqa_kernel(
    lw, q, a, sw0, sw1, sw2, sw3, sq0, sq1, sq2, sq3, sa0, sa1, sa2, sa3,
    do, du, T, H, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, DOT: tl.constexpr, SHARED: tl.constexpr,
):  # fmt: skip
    """Every chunk at once, one block of value columns: the share of the corrections' gradient that
    does not depend on the carried ``dS``, Q_aᵀ dO (Q_a summed over blocks of the key axis), stored
    in ``du`` [chunks · C, V] (fp32) for ``chunk_dstates_kernel``, which adds A_end dS in place."""
    if SHARED:
        sa0, sa1, sa2, sa3 = sq0, sq1, sq2, sq3
    i_bh, n, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    rc, rv = tl.arange(0, C), i_v * BV + tl.arange(0, BV)
    mv = rv < V
    t = n * C + rc
    mt = t < T
    Qa = tl.zeros([C, C], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BK)):
        rk = i_k * BK + tl.arange(0, BK)
        mk = rk < K
        qq = _tile(q, sq0, sq1, sq2, sq3, i_b, i_h, t, rk, mt, mk)
        aa = _tile(a, sa0, sa1, sa2, sa3, i_b, i_h, t, rk, mt, mk)
        g, G, GC = _chunk_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk, SCALAR)
        Qa += _decayed_raw(qq, aa, G, G, SCALAR, DOT)
    gh, Gh = _head_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, mt, C, SCALAR)
    row = (i_b * T + t) * H + i_h
    dO = tl.load(do + row[:, None] * V + rv[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
    dU = _dot(tl.trans(_masked(Qa, Gh, Gh, rc[:, None] >= rc[None, :], SCALAR)), dO.to(tl.float32), DOT)
    N = tl.cdiv(T, C)
    tl.store(du + ((i_bh * N + n) * C + rc)[:, None] * V + rv[None, :], dU, mask=mv[None, :])


@triton.jit
def chunk_dstates_kernel(
    lw, q, a,
    sw0, sw1, sw2, sw3, sq0, sq1, sq2, sq3, sa0, sa1, sa2, sa3,
    w_in, do, du, dht, dstates, dh0, T, H, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, LOWRANK: tl.constexpr, DOT: tl.constexpr, SHARED: tl.constexpr,
    CUM: tl.constexpr,
):  # fmt: skip
    """The chunks in reverse: stores the gradient of each chunk's end state, passes it backwards.
    A program holds a [BK, BV] block of it, the key axis in blocks without a correction and whole
    with one (Wᵀ dU sums over it), and K and V are compile-time constants, as in
    ``chunk_states_kernel``. With a correction, ``du`` holds ``chunk_dqa_kernel``'s Q_aᵀ dO; the walk
    adds A_end dS and stores the whole dU back in place for ``chunk_dv_kernel``: what does not
    depend on ``dS`` stays out of the sequential work."""
    if SHARED:  # q and a in one layout: one offset computation
        sa0, sa1, sa2, sa3 = sq0, sq1, sq2, sq3
    i_bh, i_v = tl.program_id(0), tl.program_id(1)
    i_k = tl.program_id(2) if BK < K else 0  # the key axis in blocks, or whole (a correction's)
    i_b, i_h = i_bh // H, i_bh % H
    rc, rk, rv = tl.arange(0, C), i_k * BK + tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    mk, mv = rk < K, rv < V
    pS, mS = rk[:, None] * V + rv[None, :], mk[:, None] & mv[None, :]
    dS = tl.load(dht + i_bh * K * V + pS, mask=mS, other=0.0)
    N = tl.cdiv(T, C)
    for i in range(0, N):
        n = N - 1 - i
        chunk = i_bh * N + n
        tl.store(dstates + chunk * K * V + pS, dS.to(dstates.dtype.element_ty), mask=mS)
        t = n * C + rc
        mt = t < T
        row = (i_b * T + t) * H + i_h
        qq = _tile(q, sq0, sq1, sq2, sq3, i_b, i_h, t, rk, mt, mk)
        dO = tl.load(do + row[:, None] * V + rv[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
        dO = dO.to(tl.float32)  # do: fp32 or o's 16-bit type
        G, GC = _cumulative_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, n, t, rk, mt, mk, T, C, SCALAR, CUM)
        dS_prev = _dot(tl.trans(_from_start(qq, G, SCALAR)), dO, DOT)
        if LOWRANK:
            aa = _tile(a, sa0, sa1, sa2, sa3, i_b, i_h, t, rk, mt, mk)
            pu = du + (chunk * C + rc)[:, None] * V + rv[None, :]
            dU = tl.load(pu, mask=mv[None, :], other=0.0) + _dot(_to_end(aa, G, GC, SCALAR), dS, DOT)
            tl.store(pu, dU, mask=mv[None, :])
            W = tl.load(w_in + (chunk * C + rc)[:, None] * K + rk[None, :], mask=mk[None, :], other=0.0)
            dS_prev += _dot(tl.trans(W.to(tl.float32)), dU, DOT)
        dS = dS_prev + _decay_state(dS, GC, SCALAR)
    tl.store(dh0 + i_bh * K * V + pS, dS, mask=mS)


@triton.jit
def _decayed_raw(x, y, gx, gy, SCALAR: tl.constexpr, DOT: tl.constexpr):
    """One block of the key axis' share of ``Σ_i x_t[i] y_τ[i] exp(gx_t[i] - gy_τ[i])``, unmasked
    (with one decay per head the decay is applied once, after the sum: ``_masked``)."""
    if SCALAR:
        out = _dot(x, tl.trans(y), DOT)
    else:
        out = _wide_dot(x * tl.exp(gx), tl.trans(y * tl.exp(-gy)), DOT)
    return out


@triton.jit
def chunk_dv_kernel(
    lw, q, k, b,
    sw0, sw1, sw2, sw3, sq0, sq1, sq2, sq3, sk0, sk1, sk2, sk3, sb0, sb1, sb2, sb3,
    dstates, inv_in, du, do, dv, dr_out, T, H, K, V,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, LOWRANK: tl.constexpr, DOT: tl.constexpr, SHARED: tl.constexpr,
    CUM: tl.constexpr = False,
):  # fmt: skip
    """Every chunk at once, one block of value columns: dv = Q_kᵀ dO + K_end dS (+ M_akᵀ dR), and the
    corrections' gradient dR = (I - M_ab)⁻ᵀ dU (``chunk_dstates_kernel``'s dU), stored for the dq/dk
    kernels. The [C, C] matrices are summed over blocks of the key axis."""
    if SHARED:
        sk0, sk1, sk2, sk3 = sq0, sq1, sq2, sq3
        sb0, sb1, sb2, sb3 = sq0, sq1, sq2, sq3
    i_bh, n, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    N = tl.cdiv(T, C)
    rc, rv = tl.arange(0, C), i_v * BV + tl.arange(0, BV)
    mv = rv < V
    t = n * C + rc
    mt = t < T
    row = (i_b * T + t) * H + i_h
    chunk = i_bh * N + n
    Qk = tl.zeros([C, C], dtype=tl.float32)
    Mak = tl.zeros([C, C], dtype=tl.float32)
    dvv = tl.zeros([C, BV], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BK)):
        rk = i_k * BK + tl.arange(0, BK)
        mk = rk < K
        qq = _tile(q, sq0, sq1, sq2, sq3, i_b, i_h, t, rk, mt, mk)
        kk = _tile(k, sk0, sk1, sk2, sk3, i_b, i_h, t, rk, mt, mk)
        dS = tl.load(dstates + chunk * K * V + rk[:, None] * V + rv[None, :],
                     mask=mk[:, None] & mv[None, :], other=0.0).to(tl.float32)  # fmt: skip
        if LOWRANK:  # M_ak needs the log-decays themselves
            g, G, GC = _chunk_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk, SCALAR)
        else:
            G, GC = _cumulative_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, n, t, rk, mt, mk, T, C, SCALAR, CUM)
        Qk += _decayed_raw(qq, kk, G, G, SCALAR, DOT)
        dvv += _dot(_to_end(kk, G, GC, SCALAR), dS, DOT)
        if LOWRANK:
            bb = _tile(b, sb0, sb1, sb2, sb3, i_b, i_h, t, rk, mt, mk)
            Mak += _decayed_raw(bb, kk, G - g, G, SCALAR, DOT)
    gh, Gh = _head_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, mt, C, SCALAR)
    causal = rc[:, None] >= rc[None, :]
    pv, mtv = row[:, None] * V + rv[None, :], mt[:, None] & mv[None, :]
    dO = tl.load(do + pv, mask=mtv, other=0.0).to(tl.float32)
    dvv += _dot(tl.trans(_masked(Qk, Gh, Gh, causal, SCALAR)), dO, DOT)
    if LOWRANK:
        strict = rc[:, None] > rc[None, :]
        pc = (chunk * C + rc)[:, None] * V + rv[None, :]
        dU = tl.load(du + pc, mask=mv[None, :], other=0.0)
        inv = tl.load(inv_in + (chunk * C + rc[:, None]) * C + rc[None, :])
        dR = _dot(tl.trans(inv), dU, DOT)
        dvv += _dot(tl.trans(_masked(Mak, Gh - gh, Gh, strict, SCALAR)), dR, DOT)
        tl.store(dr_out + pc, dR.to(dr_out.dtype.element_ty), mask=mv[None, :])
    tl.store(dv + pv, dvv.to(dv.dtype.element_ty), mask=mtv)


@triton.jit
def chunk_dr_kernel(
    inv_in, du, dv, dr_out, T, H, V, C: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Every chunk at once, one block of value columns, a joint delta rule (a is k: U solves
    (I - M_kb) U = B̃ S + V): the corrections' gradient dR = (I - M_kb)⁻ᵀ dU from the walk's dU, which
    is all of dv; stored as dR (for the dq/dk kernels) and as dv."""
    i_bh, n, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    N = tl.cdiv(T, C)
    rc, rv = tl.arange(0, C), i_v * BV + tl.arange(0, BV)
    mv = rv < V
    t = n * C + rc
    chunk = i_bh * N + n
    pc = (chunk * C + rc)[:, None] * V + rv[None, :]
    inv = tl.load(inv_in + (chunk * C + rc[:, None]) * C + rc[None, :])
    dR = _dot(tl.trans(inv), tl.load(du + pc, mask=mv[None, :], other=0.0), DOT)
    tl.store(dr_out + pc, dR.to(dr_out.dtype.element_ty), mask=mv[None, :])
    pv, mtv = ((i_b * T + t) * H + i_h)[:, None] * V + rv[None, :], (t < T)[:, None] & mv[None, :]
    tl.store(dv + pv, dR.to(dv.dtype.element_ty), mask=mtv)


@triton.jit
def chunk_dqk_kernel(
    lw, q, k, v,
    sw0, sw1, sw2, sw3, sq0, sq1, sq2, sq3, sk0, sk1, sk2, sk3, sv0, sv1, sv2, sv3,
    states, dstates, do, dlw, dq, dk,
    T, H, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, DOT: tl.constexpr, SHARED: tl.constexpr, SCAN: tl.constexpr = False,
    CUM: tl.constexpr = False,
):  # fmt: skip
    """Every chunk at once, one block of the key axis, no rank-one correction (the delta rule's:
    ``codegen/run/chunked_dqk.py``): the products over the value axis (dO Sᵀ, V dSᵀ, dO Vᵀ) summed
    block by block, then dq, dk and the log-decays' gradient."""
    if SHARED:
        sk0, sk1, sk2, sk3 = sq0, sq1, sq2, sq3
    i_bh, n, i_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    B = tl.num_programs(0) // H
    N = tl.cdiv(T, C)
    rc, rk = tl.arange(0, C), i_k * BK + tl.arange(0, BK)
    mk = rk < K
    t = n * C + rc
    mt = t < T
    row = (i_b * T + t) * H + i_h
    chunk = i_bh * N + n
    pk, mtk = row[:, None] * K + rk[None, :], mt[:, None] & mk[None, :]
    dq_s, dk_end, dQk, sds = _state_products(
        states, dstates, v, sv0, sv1, sv2, sv3, do, chunk, row, i_b, i_h, t, mt, rk, mk, K, V, C, BK, BV, DOT
    )  # fmt: skip
    qq = _tile(q, sq0, sq1, sq2, sq3, i_b, i_h, t, rk, mt, mk)
    kk = _tile(k, sk0, sk1, sk2, sk3, i_b, i_h, t, rk, mt, mk)
    G, GC = _cumulative_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, n, t, rk, mt, mk, T, C, SCALAR, CUM)
    if SCALAR:
        eG, eEnd = tl.exp(G)[:, None], tl.exp(GC - G)[:, None]
    else:
        eG, eEnd = tl.exp(G), tl.exp(GC[None, :] - G)
    causal = rc[:, None] >= rc[None, :]
    dq_, dk_, dg = _decayed_bwd(
        tl.where(causal, dQk, 0.0), qq, kk, G, G, causal, rc, False, SCALAR, DOT, SCAN
    )
    dqq = dq_s * eG + dq_
    dkk = dk_end * eEnd + dk_
    # dg_s = Σ_{t ≥ s} dG_t + Σ_{t < s} te_t + Γ_C Σ S ⊙ dS (+ the decayed matrix's share): each sum
    # scanned directly (a total minus a cumulative sum would cancel)
    te = _rowsum(dk_end * kk * eEnd, SCALAR)
    dg += tl.cumsum(_rowsum(dq_s * qq * eG, SCALAR), 0, reverse=True)
    if SCALAR:
        dg += tl.sum(sds, 0) * tl.exp(GC)
    else:
        dg += (sds * tl.exp(GC))[None, :]
    dg += tl.cumsum(te, 0) - te
    tl.store(dq + pk, dqq.to(dq.dtype.element_ty), mask=mtk)
    tl.store(dk + pk, dkk.to(dk.dtype.element_ty), mask=mtk)
    if SCALAR:
        tl.store(dlw + i_k * B * T * H + row, dg, mask=mt)  # one partial sum per block of the key axis
    else:
        tl.store(dlw + pk, dg.to(dlw.dtype.element_ty), mask=mtk)


def _dqa(lw, q, a, do, U, per_token: dict) -> torch.Tensor:
    """Q_aᵀ dO of every chunk (``chunk_dqa_kernel``), fp32 [chunks · C, V] as U: the walk's dU buffer."""
    B, T, H, K = q.shape
    V = do.shape[-1]
    du = torch.empty_like(U, dtype=torch.float32)
    launch = kernel_launch("dqa", per_token, V)
    grid = (B * H, U.shape[1] // per_token["C"], triton.cdiv(V, launch["BV"]))  # U: [B · H, chunks · C, V]
    chunk_dqa_kernel[grid](lw, q, a, *strides(lw), *strides(q), *strides(a), do, du, T, H, K, V, **launch)
    return du


def _dv(lw, q, k, v, ab, decays, states, dstates, inv, du, do, per_token: dict, store) -> tuple:
    """(dv, dR): ``chunk_dr_kernel`` for a joint delta rule (dv is dR), else ``chunk_dv_kernel`` (dR
    stored in ``store`` with a correction; without one ``states`` stands in for it, never written)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = states.shape[1]
    _, b, joint = correction(q, k, ab)
    dv = torch.empty(v.shape, device=q.device, dtype=v.dtype)
    dR = torch.empty_like(du, dtype=store) if ab else states
    if joint:
        launch = {x: per_token[x] for x in ("C", "BV", "DOT", "num_warps")}
        chunk_dr_kernel[(B * H, N, triton.cdiv(V, launch["BV"]))](inv, du, dv, dR, T, H, V, **launch)
    else:
        gw, cum = parallel_decays(lw, decays) if not ab else (lw, False)  # a correction's M_ak reads g
        args = (gw, q, k, b, *(s for x in (gw, q, k, b) for s in strides(x)), dstates, inv if ab else states)
        launch = kernel_launch("dv", per_token, V) if not ab else per_token  # a correction's: common block
        chunk_dv_kernel[(B * H, N, triton.cdiv(V, launch["BV"]))](
            *args, du, do, dv, dR, T, H, K, V, LOWRANK=bool(ab), CUM=cum, **launch
        )  # fmt: skip
    return dv, dR


def chunked_backward(
    lw, q, k, v, ab, h0, do, dht, chunk: int, dot: str, kept=(), store=torch.float32, half=False
) -> list:
    """[dlw, dq, dk, dv, *dab, dh0] of the chunked recurrence from the Triton kernels, each gradient
    contiguous in its input's type (dh0 fp32); the coefficients as ``chunked_forward`` takes them,
    ``do`` in its own type (fp32, or the 16-bit type of a 16-bit ``o``: read as it is, no copy).
    ``kept``: the forward's states (and U, W, T⁻¹; then G where it made them),
    ``chunked_forward_kept``'s third value; empty: kernels 1 and 2 rerun here (``chunk_states``:
    storing in ``forward_store(store, …)``).
    ``store``: ``chunked_common.store_dtype``'s, the type of the states' gradients, dR and the
    matrices' gradients; ``half``: the ``products="half"`` option (the rerun's stores)."""
    h0, dht = (x.float().contiguous() for x in (h0, dht))
    do = do.contiguous()
    B, T, H, K = q.shape
    V = v.shape[-1]
    meta = _meta(lw, q, k, v, ab, chunk, dot)
    n = 4 if ab else 1  # the kept tensors before G
    decays = (kept[n], True) if len(kept) > n else cumulative_decays(lw, chunk)
    if kept:
        states, U, W, inv = kept[:n] if ab else (kept[0], None, None, None)
    else:
        states, _, U, W, inv = chunk_states(lw, q, k, v, ab, h0, chunk, dot, store, decays, half)
    N = states.shape[1]
    dev = q.device
    dstates = torch.empty_like(states, dtype=store)
    dh0 = torch.empty(B, H, K, V, device=dev)
    a, b, joint = correction(q, k, ab)
    per_token = dict(meta, BK=key_block(K)) | token_launch()
    du = _dqa(lw, q, a, do, U, per_token) if ab else states  # Q_aᵀ dO; the walk makes it dU in place
    walk = walk_launch("dstates", meta, V, None if ab else K)
    gc, cum = decays
    chunk_dstates_kernel[walk_grid(B * H, K, V, walk)](
        gc, q, a, *strides(gc), *strides(q), *strides(a), W if ab else states, do, du, dht, dstates, dh0,
        T, H, K, V, LOWRANK=bool(ab), CUM=cum, **walk,
    )  # fmt: skip
    dv, dR = _dv(lw, q, k, v, ab, decays, states, dstates, inv, du, do, per_token, store)
    NK = triton.cdiv(K, key_block(K, split=bool(ab)))
    scalar = lw.dim() == 3
    parts = NK + bool(ab)  # with a correction, the matrices' partial sum too (chunked_dqk.py)
    dlw = torch.empty(
        (parts, *lw.shape) if scalar else lw.shape, device=dev, dtype=torch.float32 if scalar else lw.dtype
    )
    dq, dk = (torch.empty(x.shape, device=dev, dtype=x.dtype) for x in (q, k))
    dab = [torch.empty(x.shape, device=dev, dtype=x.dtype) for x in ab]
    if ab:  # joint: a is k, its gradient dk
        da, db = (dk, *dab) if joint else dab
        dqkab(lw, q, k, v, a, b, states, dstates, U, dR, do, dlw, dq, dk, da, db, NK, per_token, joint)
    else:
        gw, cum = parallel_decays(lw, decays)
        chunk_dqk_kernel[(B * H, N, NK)](
            gw, q, k, v, *(s for x in (gw, q, k, v) for s in strides(x)), states, dstates, do, dlw, dq, dk,
            T, H, K, V, SCAN=bool(LAUNCH["dg_scan"]), CUM=cum, **per_token,
        )  # fmt: skip
    if scalar:
        dlw = dlw.sum(0).to(lw.dtype)
    return [dlw, dq, dk, dv, *dab, dh0]
