"""The chunked forward as Triton kernels.

The algebra is in ``codegen/run/chunked_torch.py``. Per (batch element × head), chunk ``n`` of C steps
with ``S`` the state at its start, the forward is three launches:

1. ``chunk_prep_kernel`` (delta rules only; every chunk at once): the unit lower-triangular inverse
   ``T = (I - M_ab)⁻¹`` blocked by 16 (the diagonal blocks by forward substitution, then joined in
   pairs 16 → 32 → … → C by block forward substitution: stable where repeated squaring is not),
   ``W = T B̃`` and ``U₀ = T M_ak V``, so that the corrections are ``U = W S + U₀``.
2. ``chunk_states_kernel`` (chunks in order; one program per block of value columns, and without a
   correction per block of key rows too): stores ``S``,
   ``U = W S + U₀``, and passes ``S ← Γ_C S + K_endᵀ V + A_endᵀ U`` in fp32 registers. Three
   ``tl.dot`` a chunk: the only sequential work.
3. ``chunk_output_kernel`` (every chunk at once): ``O = Q̃ S + Q_k V + Q_a U``.

Before 2 (and before the backward's walk), ``chunk_cumsum_kernel`` writes the chunk-local cumulative
log-decays the walks read (``LAUNCH["walk_cumsum"]``; off, they scan each chunk themselves), and
with a decay per key channel the output, dv and dq/dk kernels too (``LAUNCH["parallel_cumsum"]``).

A joint delta rule (``JOINT``: ``a`` is ``k``, ``chunked_common.correction``) skips every product of
the write: ``U₀ = T V``, ``S ← Γ_C S + K_endᵀ U``, ``O = Q̃ S + Q_k U``.

The backward (``codegen/run/chunked_backward.py``) takes what 1 and 2 computed from the forward
(``LAUNCH["keep"]``: kept as the op's extra outputs) or reruns them, passes the state's gradient
backwards through the chunks, then computes every per-token gradient for all chunks
at once. The helpers both inline and the launch settings are in ``codegen/run/chunked_common.py``; the
custom op that calls them (and, without a GPU or the interpreter, runs the same algebra in PyTorch,
``chunked_torch``, for autograd to differentiate) in ``codegen/run/ops.py``.
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
    _dot,
    _from_start,
    _head_row,
    _meta,
    _split_dot,
    _tile,
    _to_end,
    correction,
    forward_store,
    kernel_launch,
    strides,
    tied,
    walk_grid,
    walk_launch,
)


def kernel_path() -> str:
    return __file__


@triton.jit
def chunk_cumsum_kernel(
    lw, sw0, sw1, sw2, sw3, gc, T, H, K, C: tl.constexpr, BK: tl.constexpr, SCALAR: tl.constexpr
):  # fmt: skip
    """Every chunk at once: the chunk-local inclusive cumulative log-decays G, fp32, in ``gc`` (lw's
    shape, contiguous), for the kernels that read only G and the chunk's total Γ_C
    (``_cumulative_decays``): the walks, whose sequential loop then loads them where it would scan the
    chunk's log-decays, and with a decay per key channel the output, dv and dq/dk kernels."""
    i_bh, n = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    t = n * C + tl.arange(0, C)
    mt = t < T
    row = (i_b * T + t) * H + i_h
    if SCALAR:
        g = _head_row(lw, sw0, sw1, sw2, i_b, i_h, t, mt)
        tl.store(gc + row, tl.cumsum(g, 0), mask=mt)
    else:
        for i_k in range(0, tl.cdiv(K, BK)):
            rk = i_k * BK + tl.arange(0, BK)
            mk = rk < K
            G = tl.cumsum(_tile(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk), 0)
            tl.store(gc + row[:, None] * K + rk[None, :], G, mask=mt[:, None] & mk[None, :])


@triton.jit
def _cumulative_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, n, t, rk, mt, mk, T, C: tl.constexpr,
                       SCALAR: tl.constexpr, CUM: tl.constexpr):  # fmt: skip
    """(G, Γ_C) of chunk ``n``: ``CUM``, loaded from ``chunk_cumsum_kernel``'s G (0 past
    T, where the operands are 0 too) and its row at the chunk's last step; else ``_chunk_decays``'."""
    if CUM:
        last = tl.minimum(n * C + C - 1, T - 1)
        if SCALAR:
            G = _head_row(lw, sw0, sw1, sw2, i_b, i_h, t, mt)
            GC = tl.load(lw + i_b * sw0 + i_h * sw2 + last * sw1)
        else:
            G = _tile(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk)
            GC = tl.load(lw + i_b * sw0 + i_h * sw2 + last * sw1 + rk * sw3, mask=mk, other=0.0)
    else:
        g, G, GC = _chunk_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk, SCALAR)
    return G, GC


def cumulative_decays(lw: torch.Tensor, chunk: int) -> tuple[torch.Tensor, bool]:
    """What the walks read for their decays, and their ``CUM``: with ``LAUNCH["walk_cumsum"]`` the
    chunk-local cumulative log-decays (``chunk_cumsum_kernel``, one launch), else ``lw`` itself."""
    if not LAUNCH["walk_cumsum"]:
        return lw, False
    B, T, H = lw.shape[:3]
    K = lw.shape[3] if lw.dim() == 4 else 1
    gc = torch.empty(lw.shape, device=lw.device, dtype=torch.float32)
    BK = min(64, max(16, triton.next_power_of_2(K)))
    chunk_cumsum_kernel[(B * H, -(-T // chunk))](
        lw, *strides(lw), gc, T, H, K, C=chunk, BK=BK, SCALAR=lw.dim() == 3
    )  # fmt: skip
    return gc, True


def parallel_decays(lw: torch.Tensor, decays: tuple[torch.Tensor, bool]) -> tuple[torch.Tensor, bool]:
    """What the kernels over every chunk at once that need only G read (output, dv and dq/dk without a
    correction), and their ``CUM``: ``cumulative_decays``' G where it was computed, the decay is one
    per key channel (a ``[C, BK]`` scan each; a head's is a ``[C]`` one) and
    ``LAUNCH["parallel_cumsum"]``; else ``lw``."""
    gc, cum = decays
    return (gc, True) if cum and lw.dim() == 4 and LAUNCH["parallel_cumsum"] else (lw, False)


@triton.jit
def _diagonal_inverses(p, C: tl.constexpr):
    """Writes T_ii = (I - L_ii)⁻¹ over the C/16 diagonal 16×16 blocks of the strictly lower L at ``p``
    (row stride C), all blocks at once as one [C/16, 16, 16] tile, by forward substitution: row t of
    T_ii is e_t + Σ_{m<t} L_ii[t, m]·(row m of T_ii), the rows above it final (15 steps; row t of L
    read from memory, so a step has one reduction, over 16 elements)."""
    nb = tl.arange(0, C // 16)[:, None, None] * 16  # [C/16, 1, 1]: the blocks' first row and column
    r, c = tl.arange(0, 16)[None, :, None], tl.arange(0, 16)[None, None, :]
    inv = tl.where(r == c, 1.0, 0.0) + tl.zeros([C // 16, 16, 16], dtype=tl.float32)
    for t in tl.static_range(1, 16):  # unrolled: nothing software-pipelined across the barriers
        lt = tl.load(p + (nb + t) * C + nb + r)  # [C/16, 16, 1]: L_ii[t, m] along m
        inv = tl.where(r == t, inv + tl.sum(lt * inv, 1)[:, None, :], inv)
    tl.debug_barrier()  # every row of L read before any is overwritten
    tl.store(p + (nb + r) * C + nb + c, inv)


@triton.jit
def _merge_pairs(p, s: tl.constexpr, C: tl.constexpr):
    """Joins the inverted s×s diagonal blocks at ``p`` ([C, C], row stride C) in pairs: the inverse
    of [[I - L₁₁, 0], [-L₂₁, I - L₂₂]] is [[T₁₁, 0], [T₂₂ L₂₁ T₁₁, T₂₂]], so only the block below
    the diagonal is written, over L₂₁; two [s, s]·[s, s] products a pair, exact fp32."""
    r = tl.arange(0, s)
    for j in tl.static_range(0, C // (2 * s)):  # unrolled: no pipelined load crosses a barrier
        o = 2 * j * s
        T11 = tl.load(p + (o + r[:, None]) * C + o + r[None, :])
        L21 = tl.load(p + (o + s + r[:, None]) * C + o + r[None, :])
        T22 = tl.load(p + (o + s + r[:, None]) * C + o + s + r[None, :])
        T21 = tl.dot(T22, tl.dot(L21, T11, input_precision="ieee"), input_precision="ieee")
        tl.debug_barrier()  # L₂₁ read everywhere before it is overwritten
        tl.store(p + (o + s + r[:, None]) * C + o + r[None, :], T21)
    tl.debug_barrier()


@triton.jit
def _unit_lower_inverse(L, p, rc, C: tl.constexpr):
    """(I - L)⁻¹ for a strictly lower triangular L [C, C], blocked by 16, with ``p`` (the chunk's
    [C, C] of ``inv_out``) as scratch and result: L is written there, its 16×16 diagonal blocks are
    inverted by forward substitution (``_diagonal_inverses``), then joined 16 → 32 → … → C
    (``_merge_pairs``: block forward substitution); T is read back for the products that follow.

    Both steps are forward substitution, the stable form (no powers of L: the earlier repeated
    squaring lost fp32 on an undamped delta rule). The joins' products are exact fp32 ("ieee"),
    whatever the layer's ``DOT``: T's entries grow with an undamped delta rule, every correction
    (W, U₀, hence U and O) is multiplied by T, and TF32's relative rounding of 2⁻¹¹ per operand would
    come back amplified (emulated in float64 at C 64, unit-norm keys: T's error 1e-4 to 7e-4 with
    TF32 operands against 1e-7); they are few (at C 64: four [16, 16]·[16, 16] and two
    [32, 32]·[32, 32], 82 K multiply-adds, a sixth of T·B̃'s)."""
    tile = p + rc[:, None] * C + rc[None, :]
    tl.store(tile, L)
    tl.debug_barrier()
    _diagonal_inverses(p, C)
    tl.debug_barrier()
    for level in tl.static_range(0, 12):  # blocks of s = 16, 32, … joined while 2s ≤ C
        if (16 << level) < C:
            _merge_pairs(p, 16 << level, C)
    return tl.load(tile)


@triton.jit
def _b_tile(b, s0, s1, s2, s3, i_b, i_h, t, r, mt, mr, kk, TIED: tl.constexpr):
    """The correction's read vectors b [len(t), len(r)] (``_tile``); ``TIED``: b is [B, T, H], one σ
    a token, and the read vectors σ_t k_t of the key tile ``kk`` (``LinearForm.tie``)."""
    if TIED:
        out = _head_row(b, s0, s1, s2, i_b, i_h, t, mt)[:, None] * kk
    else:
        out = _tile(b, s0, s1, s2, s3, i_b, i_h, t, r, mt, mr)
    return out


@triton.jit
def _store_db(db, da, dbb, aa, b, sb0, sb1, sb2, i_b, i_h, t, mt, part, pk, mtk, TIED: tl.constexpr):
    """Stores the first pass's db: b's gradient ``dbb`` [C, BK]; ``TIED`` (b = σ a) σ's, this key
    block's partial sum Σ dbb ⊙ a at ``part`` (its rows in the block's [B, T, H]), and σ dbb, a's
    share, into ``da``, which the second pass reads back and adds to."""
    if TIED:
        tl.store(db + part, tl.sum(dbb * aa, 1), mask=mt)
        sig = _head_row(b, sb0, sb1, sb2, i_b, i_h, t, mt)[:, None]
        tl.store(da + pk, (sig * dbb).to(da.dtype.element_ty), mask=mtk)
        tl.debug_barrier()  # read back by the same program after the second pass
    else:
        tl.store(db + pk, dbb.to(db.dtype.element_ty), mask=mtk)


@triton.jit
def chunk_prep_kernel(
    lw, k, v, a, b,
    sw0, sw1, sw2, sw3, sk0, sk1, sk2, sk3, sv0, sv1, sv2, sv3,
    sa0, sa1, sa2, sa3, sb0, sb1, sb2, sb3,
    inv_out, w_out, u0_out, T, H, K, V,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, DOT: tl.constexpr, SHARED: tl.constexpr, JOINT: tl.constexpr,
    TIED: tl.constexpr,
):  # fmt: skip
    """Per chunk: T = (I - M_ab)⁻¹ [C, C], W = T B̃ [C, K] and U₀ = T M_ak V [C, V] (``JOINT``: a is
    k, U₀ = T V; ``TIED``: b one value a token, the read vectors b k)."""
    if SHARED:  # k, a and b in one layout: one offset computation
        sa0, sa1, sa2, sa3 = sk0, sk1, sk2, sk3
        if not TIED:
            sb0, sb1, sb2, sb3 = sk0, sk1, sk2, sk3
    i_bh, n = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    N = tl.cdiv(T, C)
    rc, rk = tl.arange(0, C), tl.arange(0, BK)
    t = n * C + rc
    mt, mk = t < T, rk < K
    aa = _tile(a, sa0, sa1, sa2, sa3, i_b, i_h, t, rk, mt, mk)
    bb = _b_tile(b, sb0, sb1, sb2, sb3, i_b, i_h, t, rk, mt, mk, aa, TIED)
    g, G, GC = _chunk_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk, SCALAR)
    Gm = G - g  # the decay before step t
    strict = rc[:, None] > rc[None, :]
    chunk = i_bh * N + n
    # M_ak and B̃ before the inverse: the [C, K] tiles of k, a, b are not held across it (at GDN_100m
    # head shapes they spilled 252 B a thread, compiled for sm_90 with Triton 3.6; now none)
    L = _decayed(bb, aa, Gm, G, strict, SCALAR, DOT)
    if not JOINT:
        kk = _tile(k, sk0, sk1, sk2, sk3, i_b, i_h, t, rk, mt, mk)
        Mak = _decayed(bb, kk, Gm, G, strict, SCALAR, DOT)
    Bs = _from_start(bb, Gm, SCALAR)
    inv = _unit_lower_inverse(L, inv_out + chunk * C * C, rc, C)
    out_row = chunk * C + rc
    W = _dot(inv, Bs, DOT)
    tl.store(w_out + out_row[:, None] * K + rk[None, :], W.to(w_out.dtype.element_ty), mask=mk[None, :])
    if JOINT:  # (I - M_kb) U = B̃ S + V
        IM = inv
    else:
        IM = _dot(inv, Mak, DOT)
    for i_v in range(0, tl.cdiv(V, BV)):
        rv = i_v * BV + tl.arange(0, BV)
        mv = rv < V
        U0 = _dot(IM, _tile(v, sv0, sv1, sv2, sv3, i_b, i_h, t, rv, mt, mv), DOT)
        tl.store(
            u0_out + out_row[:, None] * V + rv[None, :], U0.to(u0_out.dtype.element_ty), mask=mv[None, :]
        )


@triton.jit
def chunk_states_kernel(
    lw, k, v, a,
    sw0, sw1, sw2, sw3, sk0, sk1, sk2, sk3, sv0, sv1, sv2, sv3,
    sa0, sa1, sa2, sa3,
    w_in, u0_in, h0, states, u_out, ht, T, H, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, LOWRANK: tl.constexpr, DOT: tl.constexpr, SHARED: tl.constexpr,
    JOINT: tl.constexpr, CUM: tl.constexpr,
):  # fmt: skip
    """The chunks in order: stores each chunk's start state (and its corrections U), passes the state.
    A program holds a [BK, BV] block of the state: without a correction the key rows evolve apart
    (the decay is diagonal in the key axis), so the key axis is split into blocks (``walk_launch``);
    a correction (U = W S + U₀) contracts the state over the key axis, which a program then holds
    whole; where one block holds the key axis its offset is the constant 0 (a program id of 0 added at
    run time spilled more: GDN_100m 704 against 576 B a thread, benchmarks/results/walks-2/). K and V
    are compile-time constants: Triton hoists the loop-invariant [C, BK] and [BK, BV] offsets and
    masks out of the loop, which with runtime sizes spilled (``LAUNCH``'s comment)."""
    if SHARED:
        sa0, sa1, sa2, sa3 = sk0, sk1, sk2, sk3
    i_bh, i_v = tl.program_id(0), tl.program_id(1)
    i_k = tl.program_id(2) if BK < K else 0  # the key axis in blocks, or whole (a correction's)
    i_b, i_h = i_bh // H, i_bh % H
    rc, rk, rv = tl.arange(0, C), i_k * BK + tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    mk, mv = rk < K, rv < V
    pS, mS = rk[:, None] * V + rv[None, :], mk[:, None] & mv[None, :]
    S = tl.load(h0 + i_bh * K * V + pS, mask=mS, other=0.0)
    N = tl.cdiv(T, C)
    for n in range(0, N):
        chunk = i_bh * N + n
        tl.store(states + chunk * K * V + pS, S.to(states.dtype.element_ty), mask=mS)
        t = n * C + rc
        mt = t < T
        G, GC = _cumulative_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, n, t, rk, mt, mk, T, C, SCALAR, CUM)
        if not JOINT:  # the write k vᵀ (joint: inside U)
            kk = _tile(k, sk0, sk1, sk2, sk3, i_b, i_h, t, rk, mt, mk)
            vv = _tile(v, sv0, sv1, sv2, sv3, i_b, i_h, t, rv, mt, mv)
            new = _dot(tl.trans(_to_end(kk, G, GC, SCALAR)), vv, DOT)
        if LOWRANK:
            out_row = chunk * C + rc
            W = tl.load(w_in + out_row[:, None] * K + rk[None, :], mask=mk[None, :], other=0.0)
            pu = out_row[:, None] * V + rv[None, :]
            U = _dot(W.to(tl.float32), S, DOT) + tl.load(u0_in + pu, mask=mv[None, :], other=0.0).to(
                tl.float32
            )
            tl.store(u_out + pu, U.to(u_out.dtype.element_ty), mask=mv[None, :])
            aa = _tile(a, sa0, sa1, sa2, sa3, i_b, i_h, t, rk, mt, mk)
            if JOINT:
                new = _dot(tl.trans(_to_end(aa, G, GC, SCALAR)), U, DOT)
            else:
                new += _dot(tl.trans(_to_end(aa, G, GC, SCALAR)), U, DOT)
        S = _decay_state(S, GC, SCALAR) + new
    tl.store(ht + i_bh * K * V + pS, S, mask=mS)


@triton.jit
def chunk_output_kernel(
    lw, q, k, v, a,
    sw0, sw1, sw2, sw3, sq0, sq1, sq2, sq3, sk0, sk1, sk2, sk3,
    sv0, sv1, sv2, sv3, sa0, sa1, sa2, sa3,
    states, u_in, o, T, H, K, V,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, LOWRANK: tl.constexpr, DOT: tl.constexpr, SHARED: tl.constexpr,
    SPLIT: tl.constexpr, JOINT: tl.constexpr, CUM: tl.constexpr = False,
):  # fmt: skip
    """Every chunk at once: O = Q̃ S + Q_k V (+ Q_a U; ``JOINT``: a is k, O = Q̃ S + Q_k U); ``SPLIT``:
    the scores Q_k as two 16-bit terms."""
    if SHARED:
        sk0, sk1, sk2, sk3 = sq0, sq1, sq2, sq3
        sa0, sa1, sa2, sa3 = sq0, sq1, sq2, sq3
    i_bh, n, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    N = tl.cdiv(T, C)
    rc, rk, rv = tl.arange(0, C), tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    mk, mv = rk < K, rv < V
    chunk = i_bh * N + n
    S = tl.load(
        states + chunk * K * V + rk[:, None] * V + rv[None, :], mask=mk[:, None] & mv[None, :], other=0.0
    ).to(tl.float32)
    t = n * C + rc
    mt = t < T
    qq = _tile(q, sq0, sq1, sq2, sq3, i_b, i_h, t, rk, mt, mk)
    G, GC = _cumulative_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, n, t, rk, mt, mk, T, C, SCALAR, CUM)
    causal = rc[:, None] >= rc[None, :]
    out = _dot(_from_start(qq, G, SCALAR), S, DOT)
    if not JOINT:
        kk = _tile(k, sk0, sk1, sk2, sk3, i_b, i_h, t, rk, mt, mk)
        vv = _tile(v, sv0, sv1, sv2, sv3, i_b, i_h, t, rv, mt, mv)
        if SPLIT:
            out += _split_dot(_decayed(qq, kk, G, G, causal, SCALAR, DOT), vv, DOT)
        else:
            out += _dot(_decayed(qq, kk, G, G, causal, SCALAR, DOT), vv, DOT)
    if LOWRANK:
        aa = _tile(a, sa0, sa1, sa2, sa3, i_b, i_h, t, rk, mt, mk)
        U = tl.load(u_in + (chunk * C + rc)[:, None] * V + rv[None, :], mask=mv[None, :], other=0.0)
        U = U.to(tl.float32)
        out += _dot(_decayed(qq, aa, G, G, causal, SCALAR, DOT), U, DOT)
    row = (i_b * T + t) * H + i_h
    tl.store(o + row[:, None] * V + rv[None, :], out.to(o.dtype.element_ty), mask=mt[:, None] & mv[None, :])


def chunk_states(lw, q, k, v, ab, h0, chunk: int, dot: str, store=torch.float32, decays=None, half=False):
    """Kernels 1 and 2: (the state at every chunk's start [B·H, N, K, V], final state [B, H, K, V],
    the corrections U [B·H, N·C, V] or None, W [B·H, N·C, K] or None, T⁻¹ [B·H, N, C, C] or None).
    The coefficients may have any float type and any strides (``strides``); the start states, U, W
    (and U₀ between the kernels) are stored in ``forward_store(store, …)`` (``store``:
    ``chunked_common.store_dtype``'s), the final state and T⁻¹ in fp32. ``decays``:
    ``cumulative_decays(lw, chunk)`` where the caller has it (computed here otherwise); ``half``: the
    ``products="half"`` option (``forward_store``)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = -(-T // chunk)
    meta = _meta(lw, q, k, v, ab, chunk, dot)
    dev, f32, kept = q.device, torch.float32, forward_store(store, bool(ab), half)
    states = torch.empty(B * H, N, K, V, device=dev, dtype=kept)
    ht = torch.empty(B, H, K, V, device=dev, dtype=f32)
    U = W = inv = None
    a, b, joint = correction(q, k, ab)
    sw, sk, sv, sa, sb = (strides(x) for x in (lw, k, v, a, b))
    if ab:
        inv = torch.empty(B * H, N, chunk, chunk, device=dev, dtype=f32)
        W = torch.empty(B * H, N * chunk, K, device=dev, dtype=kept)
        U0 = torch.empty(B * H, N * chunk, V, device=dev, dtype=kept)
        U = torch.empty_like(U0)
        prep = {x: meta[x] for x in ("C", "BK", "BV", "SCALAR", "DOT", "SHARED")}
        prep["num_warps"] = LAUNCH["prep_warps"] or meta["num_warps"]
        chunk_prep_kernel[(B * H, N)](
            lw, k, v, a, b, *sw, *sk, *sv, *sa, *sb, inv, W, U0, T, H, K, V, JOINT=joint, TIED=tied(ab),
            **prep,
        )  # fmt: skip
    walk = walk_launch("states", meta, V, None if ab else K)
    gc, cum = decays or cumulative_decays(lw, chunk)
    chunk_states_kernel[walk_grid(B * H, K, V, walk)](
        gc, k, v, a, *strides(gc), *sk, *sv, *sa, W if ab else states, U0 if ab else states, h0, states,
        U if ab else states, ht, T, H, K, V, LOWRANK=bool(ab), JOINT=joint, CUM=cum, **walk,
    )  # fmt: skip
    return states, ht, U, W, inv


def chunked_forward(
    lw, q, k, v, ab, h0, chunk: int, dot: str, o_type=torch.float32, store=torch.float32, split=False
):
    """(o [B, T, H, V] of type ``o_type`` (summed in fp32, rounded once), final state [B, H, K, V]
    fp32) from the Triton kernels; ``dot``: the products' type (``chunked_common.DOTS``); ``store``:
    the intermediates' (``chunk_states``); ``split``: the intra-chunk scores multiplied as two terms
    of a 16-bit ``dot``'s type (``LinearForm.split_scores``)."""
    return chunked_forward_kept(lw, q, k, v, ab, h0, chunk, dot, o_type, store, split)[:2]


def chunked_forward_kept(
    lw, q, k, v, ab, h0, chunk: int, dot: str, o_type=torch.float32, store=torch.float32, split=False,
    half=False,
):  # fmt: skip
    """``chunked_forward``'s (o, final state) and what ``chunked_backward`` would rerun kernels 1 and 2
    for: [states] without a rank-one correction, [states, U, W, T⁻¹] with one (``chunk_states``),
    followed by the chunk-local cumulative log-decays G where they were computed
    (``cumulative_decays``: ``LAUNCH["walk_cumsum"]``), which the backward reads too; ``half``: the
    ``products="half"`` option (``chunk_states``)."""
    h0 = h0.float().contiguous()
    B, T, H, K = q.shape
    V = v.shape[-1]
    decays = cumulative_decays(lw, chunk)
    states, ht, U, W, inv = chunk_states(lw, q, k, v, ab, h0, chunk, dot, store, decays, half)
    meta = _meta(lw, q, k, v, ab, chunk, dot)
    o = torch.empty(B, T, H, V, device=q.device, dtype=o_type)
    a, _, joint = correction(q, k, ab)
    launch = kernel_launch("output", meta, V)
    if ab:  # a correction's output holds a block of U too: the common block (LAUNCH's comment)
        launch["BV"] = meta["BV"]
    grid = (B * H, states.shape[1], triton.cdiv(V, launch["BV"]))
    gw, cum = parallel_decays(lw, decays)
    chunk_output_kernel[grid](
        gw, q, k, v, a, *(s for x in (gw, q, k, v, a) for s in strides(x)), states, U if ab else states, o,
        T, H, K, V, LOWRANK=bool(ab), SPLIT=split, JOINT=joint, CUM=cum, **launch,
    )  # fmt: skip
    kept = [states, U, W, inv] if ab else [states]
    return o, ht, kept + [decays[0]] if decays[1] else kept  # G too, where computed
