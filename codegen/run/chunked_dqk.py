"""The delta rule's dq, dk, da, db in two kernels: the gradients of the chunk's four decayed [C, C]
matrices once per chunk, then the per-token gradients by blocks of the key axis. The algebra (and
``chunk_dqk_kernel``, the forms without a correction): ``codegen/run/chunked_backward.py``.

With a rank-one correction the per-token gradients need four [C, C] products over the value axis,

    dQ_k = dO Vᵀ, dQ_a = dO Uᵀ (causal), dM_ak = dR Vᵀ, dM_ab = dR Uᵀ (strictly causal),

which do not depend on the key axis. ``chunk_dmat_kernel`` (one program per chunk) sums them over the
value axis in blocks, all four in one pass that reads each tile once (a pass per pair took 0.39
against 0.27 ms a GDN_100m call on an H200, round-16/), applies the masks and, with one decay per
head, the decay ratios exp(G_t - G_τ), and stores them (4·C·C a chunk; ``store_dtype``'s type). With
one decay per head it also sums the four matrices' share of the log-decays' gradient,

    dg_s = Σ_{τ < s ≤ t} Z_n[t, τ] + Σ_{τ < s < t} Z_s[t, τ],   Z = dP ⊙ (x yᵀ)

(Z_n of the two causal matrices, Z_s of the two strict ones, x yᵀ = q kᵀ, q aᵀ, b kᵀ, b aᵀ summed over
the key axis): a cumulative sum along τ, a masked column sum and a shift by one step, every sum over
exactly its terms, stored as one more partial sum of the decay gradient beside the key blocks'. A
joint delta rule (``JOINT``: a is k) has two of the four matrices, Q_a and M_ab (``_slots``), and no dk.

``chunk_dqkab_kernel`` (one program per chunk and block of the key axis, the key blocks fastest in
its grid: a chunk's programs share its tiles in L2) works in two passes over the value axis, each
summing two [C, K] products: the rows' sides dq and db from the start state (dO Sᵀ, dR Sᵀ), then the
columns' sides dk and da from the end-state gradient (V dSᵀ, U dSᵀ), each adding the matrices'
products with the chunk's tiles (one pass of four accumulators took 7% longer, round-16/). Holding no
[C, C] accumulator, it takes key blocks of 64 (``LAUNCH["split_bk"]``; its warps and stages there).
The forms without a correction take their products with the states from ``_state_products``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from archdsl.codegen.run.chunked_common import (
    LAUNCH,
    _chunk_decays,
    _decay_grad_scan,
    _dot,
    _head_decays,
    _masked,
    _rowsum,
    _tile,
    _wide_dot,
    key_block,
    strides,
    tied,
)
from archdsl.codegen.run.chunked_kernels import _b_tile, _store_db


@triton.jit
def _value_products(do, row, dr_in, v, sv0, sv1, sv2, sv3, u_in, urow, i_b, i_h, t, mt, V, C: tl.constexpr,
                    BV: tl.constexpr, DOT: tl.constexpr, JOINT: tl.constexpr):  # fmt: skip
    """(dO Vᵀ, dO Uᵀ, dR Vᵀ, dR Uᵀ) [C, C], summed over the value axis in blocks, each tile read once:
    dO the rows ``row`` of ``do``, dR and U the rows ``urow`` of ``dr_in`` and ``u_in`` [·, V]
    (``JOINT``: V's two stay zero)."""
    o_v = tl.zeros([C, C], dtype=tl.float32)
    o_u = tl.zeros([C, C], dtype=tl.float32)
    r_v = tl.zeros([C, C], dtype=tl.float32)
    r_u = tl.zeros([C, C], dtype=tl.float32)
    for i_v in range(0, tl.cdiv(V, BV)):
        rv = i_v * BV + tl.arange(0, BV)
        mv = rv < V
        m = mt[:, None] & mv[None, :]
        dO = tl.load(do + row[:, None] * V + rv[None, :], mask=m, other=0.0).to(tl.float32)
        dR = tl.load(dr_in + urow[:, None] * V + rv[None, :], mask=m, other=0.0).to(tl.float32)
        uu = tl.trans(tl.load(u_in + urow[:, None] * V + rv[None, :], mask=m, other=0.0).to(tl.float32))
        o_u += _dot(dO, uu, DOT)
        r_u += _dot(dR, uu, DOT)
        if not JOINT:
            vv = tl.trans(_tile(v, sv0, sv1, sv2, sv3, i_b, i_h, t, rv, mt, mv))
            o_v += _dot(dO, vv, DOT)
            r_v += _dot(dR, vv, DOT)
    return o_v, o_u, r_v, r_u


@triton.jit
def _key_products(q, sq0, sq1, sq2, sq3, k, sk0, sk1, sk2, sk3, a, sa0, sa1, sa2, sa3, b, sb0, sb1, sb2, sb3,
                  i_b, i_h, t, mt, K, C: tl.constexpr, BK: tl.constexpr, DOT: tl.constexpr,
                  JOINT: tl.constexpr, TIED: tl.constexpr):  # fmt: skip
    """(q kᵀ, q aᵀ, b kᵀ, b aᵀ) [C, C] of the chunk's tiles, summed over the key axis in blocks, each
    tile read once (``JOINT``: a is k, k's two stay zero; ``TIED``: b one value a token times a)."""
    qk = tl.zeros([C, C], dtype=tl.float32)
    qa = tl.zeros([C, C], dtype=tl.float32)
    bk = tl.zeros([C, C], dtype=tl.float32)
    ba = tl.zeros([C, C], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BK)):
        rk = i_k * BK + tl.arange(0, BK)
        mk = rk < K
        qq = _tile(q, sq0, sq1, sq2, sq3, i_b, i_h, t, rk, mt, mk)
        aa = _tile(a, sa0, sa1, sa2, sa3, i_b, i_h, t, rk, mt, mk)
        bb = _b_tile(b, sb0, sb1, sb2, sb3, i_b, i_h, t, rk, mt, mk, aa, TIED)
        aa = tl.trans(aa)
        qa += _dot(qq, aa, DOT)
        ba += _dot(bb, aa, DOT)
        if not JOINT:
            kk = tl.trans(_tile(k, sk0, sk1, sk2, sk3, i_b, i_h, t, rk, mt, mk))
            qk += _dot(qq, kk, DOT)
            bk += _dot(bb, kk, DOT)
    return qk, qa, bk, ba


@triton.jit
def chunk_dmat_kernel(
    lw, q, k, v, a, b,
    sw0, sw1, sw2, sw3, sq0, sq1, sq2, sq3, sk0, sk1, sk2, sk3,
    sv0, sv1, sv2, sv3, sa0, sa1, sa2, sa3, sb0, sb1, sb2, sb3,
    u_in, dr_in, do, dmat, dlw_part, T, H, K, V,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, DOT: tl.constexpr, SHARED: tl.constexpr, JOINT: tl.constexpr, TIED: tl.constexpr,
):  # fmt: skip
    """Every chunk at once: the gradients of its four decayed matrices (Q_k, Q_a, M_ak, M_ab), masked
    and (one decay per head) times their decay ratios, stored [4, C, C] (``JOINT``: a is k, the two
    of Q_a and M_ab, [2, C, C]); with one decay per head their share of the log-decays' gradient,
    stored in ``dlw_part`` [B, T, H]."""
    if SHARED:
        sk0, sk1, sk2, sk3 = sq0, sq1, sq2, sq3
        sa0, sa1, sa2, sa3 = sq0, sq1, sq2, sq3
        if not TIED:
            sb0, sb1, sb2, sb3 = sq0, sq1, sq2, sq3
    i_bh, n = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    N = tl.cdiv(T, C)
    rc = tl.arange(0, C)
    t = n * C + rc
    mt = t < T
    row = (i_b * T + t) * H + i_h
    urow = (i_bh * N + n) * C + rc
    pm = dmat + (i_bh * N + n) * _slots(JOINT) * C * C + rc[:, None] * C + rc[None, :]
    g, G = _head_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, mt, C, SCALAR)
    causal = rc[:, None] >= rc[None, :]
    strict = rc[:, None] > rc[None, :]
    dQk, dQa, dMak, dMab = _value_products(
        do, row, dr_in, v, sv0, sv1, sv2, sv3, u_in, urow, i_b, i_h, t, mt, V, C, BV, DOT, JOINT
    )  # fmt: skip
    dPk = _masked(dQk, G, G, causal, SCALAR)
    dPa = _masked(dQa, G, G, causal, SCALAR)
    dPmak = _masked(dMak, G - g, G, strict, SCALAR)
    dPmab = _masked(dMab, G - g, G, strict, SCALAR)
    pa, pab = _slot_offsets(pm, C, JOINT)
    tl.store(pa, dPa.to(dmat.dtype.element_ty))
    tl.store(pab, dPmab.to(dmat.dtype.element_ty))
    if not JOINT:
        tl.store(pm, dPk.to(dmat.dtype.element_ty))
        tl.store(pm + 2 * C * C, dPmak.to(dmat.dtype.element_ty))
    if SCALAR:
        qk, qa, bk, ba = _key_products(
            q, sq0, sq1, sq2, sq3, k, sk0, sk1, sk2, sk3, a, sa0, sa1, sa2, sa3,
            b, sb0, sb1, sb2, sb3, i_b, i_h, t, mt, K, C, BK, DOT, JOINT, TIED,
        )  # fmt: skip
        dg = _decay_grad_scan(dPk * qk + dPa * qa, rc, False) + _decay_grad_scan(
            dPmak * bk + dPmab * ba, rc, True
        )
        tl.store(dlw_part + row, dg, mask=mt)


@triton.jit
def _slots(JOINT: tl.constexpr):
    """The matrices' gradients a chunk stores: Q_k, Q_a, M_ak, M_ab (joint: Q_a, M_ab)."""
    if JOINT:
        n = 2
    else:
        n = 4
    return n


@triton.jit
def _slot_offsets(pm, C: tl.constexpr, JOINT: tl.constexpr):
    """(Q_a's, M_ab's) stored gradients in the chunk's matrices at ``pm`` (``_slots``)."""
    if JOINT:
        pa, pab = pm, pm + C * C
    else:
        pa, pab = pm + C * C, pm + 3 * C * C
    return pa, pab


@triton.jit
def _matrix_dx(dP, x, y, gx, gy, dg, SHIFTED: tl.constexpr, SCALAR: tl.constexpr, DOT: tl.constexpr):
    """(dx, dg + its share) of M[t, τ] = Σ_i x_t[i] y_τ[i] exp(gx_t[i] - gy_τ[i]) from
    ``chunk_dmat_kernel``'s dP (masked; with one decay per head the decay ratio applied and dg as it
    came: that kernel sums the share), read in its stored type and widened to fp32 here."""
    dP = dP.to(tl.float32)
    if SCALAR:
        dx = _dot(dP, y, DOT)
    else:
        xh = x * tl.exp(gx)
        dxh = _wide_dot(dP, y * tl.exp(-gy), DOT)
        dx, dgx = dxh * tl.exp(gx), dxh * xh
        dg += tl.cumsum(dgx, 0, reverse=True)
        if SHIFTED:
            dg -= dgx
    return dx, dg


@triton.jit
def _matrix_dy(dP, x, y, gx, gy, dg, SCALAR: tl.constexpr, DOT: tl.constexpr):
    """(dy, dg + its share) of the same matrix: ``_matrix_dx``'s other side."""
    dP = dP.to(tl.float32)
    if SCALAR:
        dy = _dot(tl.trans(dP), x, DOT)
    else:
        yh = y * tl.exp(-gy)
        dyh = _wide_dot(tl.trans(dP), x * tl.exp(gx), DOT)
        dy = dyh * tl.exp(-gy)
        dg -= tl.cumsum(dyh * yh, 0, reverse=True)
    return dy, dg


@triton.jit
def _state_products(states, dstates, v, sv0, sv1, sv2, sv3, do, chunk, row, i_b, i_h, t, mt, rk, mk, K,
                    V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr):  # fmt: skip
    """One key block's products with the chunk's start state S and end-state gradient dS, summed over
    the value axis in blocks: dO Sᵀ, V dSᵀ [C, BK], dO Vᵀ [C, C] and Σ S ⊙ dS [BK]
    (``chunk_dqk_kernel``, the forms without a correction)."""
    dq_s = tl.zeros([C, BK], dtype=tl.float32)
    dk_end = tl.zeros([C, BK], dtype=tl.float32)
    dQk = tl.zeros([C, C], dtype=tl.float32)
    sds = tl.zeros([BK], dtype=tl.float32)
    for i_v in range(0, tl.cdiv(V, BV)):
        rv = i_v * BV + tl.arange(0, BV)
        mv = rv < V
        pS, mS = chunk * K * V + rk[:, None] * V + rv[None, :], mk[:, None] & mv[None, :]
        S = tl.load(states + pS, mask=mS, other=0.0).to(tl.float32)
        dS = tl.load(dstates + pS, mask=mS, other=0.0).to(tl.float32)
        dO = tl.load(do + row[:, None] * V + rv[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
        dO = dO.to(tl.float32)
        vv = _tile(v, sv0, sv1, sv2, sv3, i_b, i_h, t, rv, mt, mv)
        dq_s += _dot(dO, tl.trans(S), DOT)
        dk_end += _dot(vv, tl.trans(dS), DOT)
        dQk += _dot(dO, tl.trans(vv), DOT)
        sds += tl.sum(S * dS, 1)
    return dq_s, dk_end, dQk, sds


@triton.jit
def _start_products(states, dstates, do, dr_in, chunk, row, mt, rk, mk, K, V, C: tl.constexpr,
                    BK: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr):  # fmt: skip
    """(dO Sᵀ, dR Sᵀ) [C, BK] of one key block with the chunk's start state S, summed over the value
    axis in blocks (the products dq and db take from the state), and Σ S ⊙ dS [BK] with the chunk's
    end-state gradient dS."""
    dq_s = tl.zeros([C, BK], dtype=tl.float32)
    db_s = tl.zeros([C, BK], dtype=tl.float32)
    sds = tl.zeros([BK], dtype=tl.float32)
    urow = chunk * C + tl.arange(0, C)
    for i_v in range(0, tl.cdiv(V, BV)):
        rv = i_v * BV + tl.arange(0, BV)
        mv = rv < V
        pS, mS = chunk * K * V + rk[:, None] * V + rv[None, :], mk[:, None] & mv[None, :]
        S = tl.load(states + pS, mask=mS, other=0.0).to(tl.float32)
        sds += tl.sum(S * tl.load(dstates + pS, mask=mS, other=0.0).to(tl.float32), 1)
        mtv = mt[:, None] & mv[None, :]
        dO = tl.load(do + row[:, None] * V + rv[None, :], mask=mtv, other=0.0).to(tl.float32)
        dR = tl.load(dr_in + urow[:, None] * V + rv[None, :], mask=mtv, other=0.0).to(tl.float32)
        dq_s += _dot(dO, tl.trans(S), DOT)
        db_s += _dot(dR, tl.trans(S), DOT)
    return dq_s, db_s, sds


@triton.jit
def _end_products(dstates, v, sv0, sv1, sv2, sv3, u_in, chunk, i_b, i_h, t, mt, rk, mk, K, V,
                  C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr,
                  JOINT: tl.constexpr):  # fmt: skip
    """(V dSᵀ, U dSᵀ) [C, BK] of one key block with the chunk's end-state gradient dS, summed over the
    value axis in blocks: the products dk and da take from it (``JOINT``: V dSᵀ stays zero)."""
    dk_end = tl.zeros([C, BK], dtype=tl.float32)
    da_end = tl.zeros([C, BK], dtype=tl.float32)
    urow = chunk * C + tl.arange(0, C)
    for i_v in range(0, tl.cdiv(V, BV)):
        rv = i_v * BV + tl.arange(0, BV)
        mv = rv < V
        dS = tl.load(dstates + chunk * K * V + rk[:, None] * V + rv[None, :], mask=mk[:, None] & mv[None, :],
                     other=0.0).to(tl.float32)  # fmt: skip
        U = tl.load(u_in + urow[:, None] * V + rv[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
        da_end += _dot(U.to(tl.float32), tl.trans(dS), DOT)
        if not JOINT:
            vv = _tile(v, sv0, sv1, sv2, sv3, i_b, i_h, t, rv, mt, mv)
            dk_end += _dot(vv, tl.trans(dS), DOT)
    return dk_end, da_end


@triton.jit
def _token_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk, C: tl.constexpr, BK: tl.constexpr,
                  SCALAR: tl.constexpr):  # fmt: skip
    """(G, G - g, Γ_C's log, exp(G), exp(Γ_C - G), exp(G - g)) of one key block (the ratios broadcast
    over it with one decay per head), and a zero decay gradient of the block's shape."""
    g, G, GC = _chunk_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk, SCALAR)
    Gm = G - g  # the decay before each step
    if SCALAR:
        eG, eEnd, eGm = tl.exp(G)[:, None], tl.exp(GC - G)[:, None], tl.exp(Gm)[:, None]
        dg = tl.zeros([C], dtype=tl.float32)
    else:
        eG, eEnd, eGm = tl.exp(G), tl.exp(GC[None, :] - G), tl.exp(Gm)
        dg = tl.zeros([C, BK], dtype=tl.float32)
    return G, Gm, GC, eG, eEnd, eGm, dg


@triton.jit
def _end_decay(sds, GC, SCALAR: tl.constexpr):
    """The decay gradient's term Γ_C Σ S ⊙ dS (summed over the key block with one decay per head)."""
    if SCALAR:
        out = tl.sum(sds, 0) * tl.exp(GC)
    else:
        out = (sds * tl.exp(GC))[None, :]
    return out


@triton.jit
def _row_sides(pm, qq, kk, aa, bb, dq_s, db_s, G, Gm, eG, eGm, dg, C: tl.constexpr, SCALAR: tl.constexpr,
               DOT: tl.constexpr, JOINT: tl.constexpr):  # fmt: skip
    """(dq, db, db's share of the decay gradient before each step, dg + dq's and the matrices' rows'
    shares) from the start-state products and ``chunk_dmat_kernel``'s matrices at ``pm``:
    dq = dq_s Γ + dQ_k k + dQ_a a, db = db_s Γ_before + dM_ak k + dM_ab a (``JOINT``: no k terms)."""
    pa, pab = _slot_offsets(pm, C, JOINT)
    dqq, dg = _matrix_dx(tl.load(pa), qq, aa, G, G, dg, False, SCALAR, DOT)
    dqq += dq_s * eG
    dg += tl.cumsum(_rowsum(dq_s * qq * eG, SCALAR), 0, reverse=True)
    dbb, dg = _matrix_dx(tl.load(pab), bb, aa, Gm, G, dg, True, SCALAR, DOT)
    dbb += db_s * eGm
    if not JOINT:
        dqk, dg = _matrix_dx(tl.load(pm), qq, kk, G, G, dg, False, SCALAR, DOT)
        dbk, dg = _matrix_dx(tl.load(pm + 2 * C * C), bb, kk, Gm, G, dg, True, SCALAR, DOT)
        dqq += dqk
        dbb += dbk
    return dqq, dbb, _rowsum(db_s * bb * eGm, SCALAR), dg


@triton.jit
def _column_sides(pm, qq, kk, aa, bb, dk_end, da_end, G, Gm, eEnd, dg, C: tl.constexpr, SCALAR: tl.constexpr,
                  DOT: tl.constexpr, JOINT: tl.constexpr):  # fmt: skip
    """(da, dk, their share of the decay gradient after each step, dg + the matrices' columns' shares)
    from the end-state products and ``chunk_dmat_kernel``'s matrices at ``pm``: da = da_end Γ_C/Γ +
    dQ_aᵀ q + dM_abᵀ b, dk = dk_end Γ_C/Γ + dQ_kᵀ q + dM_akᵀ b (``JOINT``: a is k, dk not computed)."""
    pa, pab = _slot_offsets(pm, C, JOINT)
    daa, dg = _matrix_dy(tl.load(pa), qq, aa, G, G, dg, SCALAR, DOT)
    dab, dg = _matrix_dy(tl.load(pab), bb, aa, Gm, G, dg, SCALAR, DOT)
    daa += da_end * eEnd + dab
    te = _rowsum(da_end * aa * eEnd, SCALAR)
    dkk = dk_end
    if not JOINT:
        dkk, dg = _matrix_dy(tl.load(pm), qq, kk, G, G, dg, SCALAR, DOT)
        dkb, dg = _matrix_dy(tl.load(pm + 2 * C * C), bb, kk, Gm, G, dg, SCALAR, DOT)
        dkk += dk_end * eEnd + dkb
        te += _rowsum(dk_end * kk * eEnd, SCALAR)
    return daa, dkk, te, dg


@triton.jit
def chunk_dqkab_kernel(
    lw, q, k, v, a, b,
    sw0, sw1, sw2, sw3, sq0, sq1, sq2, sq3, sk0, sk1, sk2, sk3,
    sv0, sv1, sv2, sv3, sa0, sa1, sa2, sa3, sb0, sb1, sb2, sb3,
    states, dstates, u_in, dr_in, do, dmat, dlw, dq, dk, da, db,
    T, H, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, DOT: tl.constexpr, SHARED: tl.constexpr, JOINT: tl.constexpr, TIED: tl.constexpr,
):  # fmt: skip
    """Every chunk at once, one key block: dq, dk, da, db and the log-decays' gradient from the products
    over the value axis and ``chunk_dmat_kernel``'s matrices, in two passes of two [C, BK] accumulators:
    dq and db (dO Sᵀ, dR Sᵀ), then dk and da (V dSᵀ, U dSᵀ). ``JOINT`` (a is k): no dk, the key's
    gradient is da. ``TIED`` (b = σ a): db is σ's, a partial a key block (``_store_db``)."""
    if SHARED:
        sk0, sk1, sk2, sk3 = sq0, sq1, sq2, sq3
        sa0, sa1, sa2, sa3 = sq0, sq1, sq2, sq3
        if not TIED:
            sb0, sb1, sb2, sb3 = sq0, sq1, sq2, sq3
    i_k, n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)  # key blocks fastest: L2
    i_b, i_h = i_bh // H, i_bh % H
    rc, rk = tl.arange(0, C), i_k * BK + tl.arange(0, BK)
    t, mk = n * C + rc, rk < K
    mt = t < T
    row, chunk = (i_b * T + t) * H + i_h, i_bh * tl.cdiv(T, C) + n
    pk, mtk = row[:, None] * K + rk[None, :], mt[:, None] & mk[None, :]
    pm = dmat + chunk * _slots(JOINT) * C * C + rc[:, None] * C + rc[None, :]
    G, Gm, GC, eG, eEnd, eGm, dg = _token_decays(
        lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk, C, BK, SCALAR
    )
    qq = _tile(q, sq0, sq1, sq2, sq3, i_b, i_h, t, rk, mt, mk)
    kk = qq  # JOINT: a is k (never read)
    if not JOINT:
        kk = _tile(k, sk0, sk1, sk2, sk3, i_b, i_h, t, rk, mt, mk)
    aa = _tile(a, sa0, sa1, sa2, sa3, i_b, i_h, t, rk, mt, mk)
    bb = _b_tile(b, sb0, sb1, sb2, sb3, i_b, i_h, t, rk, mt, mk, aa, TIED)
    dq_s, db_s, sds = _start_products(
        states, dstates, do, dr_in, chunk, row, mt, rk, mk, K, V, C, BK, BV, DOT
    )
    dqq, dbb, dGm, dg = _row_sides(pm, qq, kk, aa, bb, dq_s, db_s, G, Gm, eG, eGm, dg, C, SCALAR, DOT, JOINT)
    tl.store(dq + pk, dqq.to(dq.dtype.element_ty), mask=mtk)
    _store_db(
        db, da, dbb, aa, b, sb0, sb1, sb2, i_b, i_h, t, mt, row + i_k * tl.num_programs(2) * T, pk, mtk, TIED
    )
    # the columns' sides: dk = dk_end Γ_C/Γ + dQ_kᵀ q + dM_akᵀ b, da = da_end Γ_C/Γ + dQ_aᵀ q + dM_abᵀ b
    dk_end, da_end = _end_products(
        dstates, v, sv0, sv1, sv2, sv3, u_in, chunk, i_b, i_h, t, mt, rk, mk, K, V, C, BK, BV, DOT, JOINT
    )  # fmt: skip
    daa, dkk, te, dg = _column_sides(
        pm, qq, kk, aa, bb, dk_end, da_end, G, Gm, eEnd, dg, C, SCALAR, DOT, JOINT
    )
    if TIED:  # σ db_b, held in da since the first pass
        daa += tl.load(da + pk, mask=mtk, other=0.0).to(tl.float32)
    tl.store(da + pk, daa.to(da.dtype.element_ty), mask=mtk)
    if not JOINT:
        tl.store(dk + pk, dkk.to(dk.dtype.element_ty), mask=mtk)
    # dg_s = Σ_{t ≥ s} dG_t + Σ_{t < s} te_t + Σ_{t > s} dGm_t + Γ_C Σ S ⊙ dS + the matrices' share
    dg += (tl.cumsum(dGm, 0, reverse=True) - dGm) + (tl.cumsum(te, 0) - te) + _end_decay(sds, GC, SCALAR)
    if SCALAR:
        tl.store(dlw + i_k * tl.num_programs(2) * T + row, dg, mask=mt)  # a partial sum per key block
    else:
        tl.store(dlw + pk, dg.to(dlw.dtype.element_ty), mask=mtk)


def dqkab(lw, q, k, v, a, b, states, dstates, U, dR, do, dlw, dq, dk, da, db, NK: int, per_token: dict,
          joint: bool = False):  # fmt: skip
    """Launches the two kernels into dq, dk, da, db and ``dlw`` (one decay per head: NK + 1 partial
    sums, the key blocks' and the matrices'); ``per_token``: the backward's per-token launch options.
    ``joint``: a is k, whose gradient goes to ``da`` alone (``dk`` is not written); a joint ``b`` of
    [B, T, H] is tied (``chunked_common.tied``): its gradient is summed from one partial a key block."""
    (B, T, H, K), V, C, N = q.shape, v.shape[-1], per_token["C"], states.shape[1]
    sw, sq, sk, sv, sa, sb = (strides(x) for x in (lw, q, k, v, a, b))
    launch = dict(
        per_token, BK=key_block(K, split=True), num_warps=LAUNCH["split_warps"] or per_token["num_warps"]
    )
    if LAUNCH["split_stages"]:
        launch["num_stages"] = LAUNCH["split_stages"]
    # the matrices' kernel walks the key axis in blocks of at most 32 (spills none at 8 warps)
    mat = dict(launch, BK=min(32, launch["BK"]))
    dmat = torch.empty(B * H * N, 2 if joint else 4, C, C, device=q.device, dtype=dstates.dtype)  # slots
    part = dlw[NK] if dlw.dim() > lw.dim() else dlw  # the matrices' partial sum of a head's decay gradient
    tie = joint and tied([b])
    chunk_dmat_kernel[(B * H, N)](
        lw, q, k, v, a, b, *sw, *sq, *sk, *sv, *sa, *sb, U, dR, do, dmat, part, T, H, K, V, JOINT=joint,
        TIED=tie, **mat,
    )  # fmt: skip
    db_parts = torch.empty(NK, *b.shape, device=q.device) if tie else db  # σ's: a partial a key block
    chunk_dqkab_kernel[(NK, N, B * H)](
        lw, q, k, v, a, b, *sw, *sq, *sk, *sv, *sa, *sb, states, dstates, U, dR, do, dmat, dlw,
        dq, dk, da, db_parts, T, H, K, V, JOINT=joint, TIED=tie, **launch,
    )  # fmt: skip
    if tie:
        db.copy_(db_parts.sum(0))
