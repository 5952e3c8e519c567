"""The delta rule's two walks over the chunks, with every product that does not depend on the state
taken out of the sequential loop.

With a rank-one correction (``ab`` = (a, b)) chunk ``n`` of the forward is, with ``S`` the state at
its start (``codegen/run/chunked_torch.py``),

    U = W S + U₀,     S_next = Γ_C S + K_endᵀ V + A_endᵀ U,

and its backward, with ``dS`` the gradient of the state at its end (``chunked_backward.py``),

    dU = Q_aᵀ dO + A_end dS,     dS_prev = Q̃ᵀ dO + Wᵀ dU + Γ_C dS.

``X_n = K_endᵀ V`` and ``Y_n = Q̃ᵀ dO + Wᵀ Q_aᵀ dO`` (each [K, V]) do not depend on the state, so two
kernels compute them for every chunk at once (``chunk_writes_kernel``, ``chunk_dwrites_kernel``) and
the walks do only what does:

    forward (chunks in order):     U = W S + U₀,  S ← Γ_C S + (X_n + A_endᵀ U),
    backward (chunks in reverse):  dS ← (Y_n + Wᵀ (A_end dS)) + Γ_C dS,

two ``tl.dot`` of [C, K]·[K, BV] size a chunk each, where the walks of ``chunked_kernels.py`` and
``chunked_backward.py`` take three (forward) and five (backward: Q_a = q aᵀ decayed, [C, C], among
them). The forward keeps ``A_endᵀ U₀`` in the walk: the walk forms U anyway (it stores it for the
output kernel and the backward), and ``A_endᵀ U`` costs what ``A_endᵀ W S`` would.

The walks keep ``A_end`` and ``W`` as the two [C, K] tiles they read, not the [K, K] products
``A_endᵀ W`` (forward) or ``Wᵀ A_end`` (backward) made in advance: at C 64, K 128 a [K, K]·[K, BV]
product is as many multiply-adds as the two [C, K] ones (K²·BV = 2·C·K·BV), the forward would still
need ``W S`` for U, and each chunk's [K, K] fp32 is 64 KB to read against 48 KB for W (fp32) and a
(bf16), with 4·B·H·N·K² bytes more memory (128 MiB a GDN_100m layer at B 32, T 512).

``X_n`` and ``Y_n`` are written into the walks' own outputs: chunk n's slot of ``states`` (forward)
and ``dstates`` (backward), where the walk reads it and then overwrites it with the chunk's start
state (its end state's gradient). No memory beyond those buffers; the other kernels read ``states``,
``U``, ``dstates``, ``ht`` and ``dh0`` in the layouts they had.
"""

from __future__ import annotations

import triton
import triton.language as tl
from archdsl.codegen.run.chunked_common import (
    _chunk_decays,
    _decay_state,
    _decayed,
    _dot,
    _from_start,
    _tile,
    _to_end,
    strides,
    walk_launch,
)

#: the key block of the two kernels of state-independent terms (at most the padded key size): each
#: loops over the key axis in blocks of this size, so no program holds a whole [C, K] tile
TERMS_BK = 64


@triton.jit
def chunk_writes_kernel(
    lw, k, v,
    sw0, sw1, sw2, sw3, sk0, sk1, sk2, sk3, sv0, sv1, sv2, sv3,
    states, T, H, K, V,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, SCALAR: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Every chunk at once, one block of value columns: X_n = K_endᵀ V [K, BV], the chunk's own writes
    decayed to its end, into the chunk's slot of ``states`` (``chunk_states_delta_kernel`` reads it)."""
    i_bh, n, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    N = tl.cdiv(T, C)
    rc, rv = tl.arange(0, C), i_v * BV + tl.arange(0, BV)
    t = n * C + rc
    mt, mv = t < T, rv < V
    chunk = i_bh * N + n
    vv = _tile(v, sv0, sv1, sv2, sv3, i_b, i_h, t, rv, mt, mv)
    for i_k in range(0, tl.cdiv(K, BK)):
        rk = i_k * BK + tl.arange(0, BK)
        mk = rk < K
        kk = _tile(k, sk0, sk1, sk2, sk3, i_b, i_h, t, rk, mt, mk)
        g, G, GC = _chunk_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk, SCALAR)
        X = _dot(tl.trans(_to_end(kk, G, GC, SCALAR)), vv, DOT)
        p = states + chunk * K * V + rk[:, None] * V + rv[None, :]
        tl.store(p, X, mask=mk[:, None] & mv[None, :])


@triton.jit
def chunk_states_delta_kernel(
    lw, a,
    sw0, sw1, sw2, sw3, sa0, sa1, sa2, sa3,
    w_in, u0_in, h0, states, u_out, ht, T, H, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, SCALAR: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """The chunks in order, one block of value columns, the key axis whole: U = W S + U₀ (stored) and
    S ← Γ_C S + (X_n + A_endᵀ U), with X_n read from the chunk's slot of ``states`` just before the
    chunk's start state S overwrites it. K and V are compile-time constants, as in
    ``chunk_states_kernel``."""
    i_bh, i_v = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    rc, rk, rv = tl.arange(0, C), tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    mk, mv = rk < K, rv < V
    pS, mS = rk[:, None] * V + rv[None, :], mk[:, None] & mv[None, :]
    S = tl.load(h0 + i_bh * K * V + pS, mask=mS, other=0.0)
    N = tl.cdiv(T, C)
    for n in range(0, N):
        chunk = i_bh * N + n
        t = n * C + rc
        mt = t < T
        out_row = chunk * C + rc
        W = tl.load(w_in + out_row[:, None] * K + rk[None, :], mask=mk[None, :], other=0.0)
        pu = out_row[:, None] * V + rv[None, :]
        U = _dot(W, S, DOT) + tl.load(u0_in + pu, mask=mv[None, :], other=0.0)
        tl.store(u_out + pu, U, mask=mv[None, :])
        aa = _tile(a, sa0, sa1, sa2, sa3, i_b, i_h, t, rk, mt, mk)
        g, G, GC = _chunk_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk, SCALAR)
        new = _dot(tl.trans(_to_end(aa, G, GC, SCALAR)), U, DOT)
        p = states + chunk * K * V + pS
        new += tl.load(p, mask=mS, other=0.0)  # X_n
        tl.debug_barrier()  # every thread's X_n read before any thread overwrites it
        tl.store(p, S, mask=mS)
        S = _decay_state(S, GC, SCALAR) + new
    tl.store(ht + i_bh * K * V + pS, S, mask=mS)


@triton.jit
def chunk_dwrites_kernel(
    lw, q, a,
    sw0, sw1, sw2, sw3, sq0, sq1, sq2, sq3, sa0, sa1, sa2, sa3,
    w_in, do, dstates, T, H, K, V,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, DOT: tl.constexpr, SHARED: tl.constexpr,
):  # fmt: skip
    """Every chunk at once, one block of value columns: Y_n = Q̃ᵀ dO + Wᵀ (Q_aᵀ dO) [K, BV], the share of
    the gradient of the chunk's start state that its outputs give, into the chunk's slot of ``dstates``
    (``chunk_dstates_delta_kernel`` reads it). Q_a [C, C] is summed over blocks of the key axis first,
    then Y_n is written block by block."""
    if SHARED:  # q and a in one layout: one offset computation
        sa0, sa1, sa2, sa3 = sq0, sq1, sq2, sq3
    i_bh, n, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    N = tl.cdiv(T, C)
    rc, rv = tl.arange(0, C), i_v * BV + tl.arange(0, BV)
    t = n * C + rc
    mt, mv = t < T, rv < V
    chunk = i_bh * N + n
    row = (i_b * T + t) * H + i_h
    dO = tl.load(do + row[:, None] * V + rv[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
    dO = dO.to(tl.float32)  # do: fp32 or o's 16-bit type
    causal = rc[:, None] >= rc[None, :]
    Qa = tl.zeros([C, C], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BK)):  # Q_a: masked and decayed block by block (linear in each)
        rk = i_k * BK + tl.arange(0, BK)
        mk = rk < K
        qq = _tile(q, sq0, sq1, sq2, sq3, i_b, i_h, t, rk, mt, mk)
        aa = _tile(a, sa0, sa1, sa2, sa3, i_b, i_h, t, rk, mt, mk)
        g, G, GC = _chunk_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk, SCALAR)
        Qa += _decayed(qq, aa, G, G, causal, SCALAR, DOT)
    QadO = _dot(tl.trans(Qa), dO, DOT)  # [C, BV]
    for i_k in range(0, tl.cdiv(K, BK)):
        rk = i_k * BK + tl.arange(0, BK)
        mk = rk < K
        qq = _tile(q, sq0, sq1, sq2, sq3, i_b, i_h, t, rk, mt, mk)
        g, G, GC = _chunk_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk, SCALAR)
        W = tl.load(w_in + (chunk * C + rc)[:, None] * K + rk[None, :], mask=mk[None, :], other=0.0)
        Y = _dot(tl.trans(_from_start(qq, G, SCALAR)), dO, DOT) + _dot(tl.trans(W), QadO, DOT)
        p = dstates + chunk * K * V + rk[:, None] * V + rv[None, :]
        tl.store(p, Y, mask=mk[:, None] & mv[None, :])


@triton.jit
def chunk_dstates_delta_kernel(
    lw, a,
    sw0, sw1, sw2, sw3, sa0, sa1, sa2, sa3,
    w_in, dht, dstates, dh0, T, H, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, SCALAR: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """The chunks in reverse, one block of value columns, the key axis whole:
    dS ← (Y_n + Wᵀ (A_end dS)) + Γ_C dS, with Y_n read from the chunk's slot of ``dstates`` just before
    dS (the gradient of the chunk's end state) overwrites it. K and V are compile-time constants."""
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
        t = n * C + rc
        mt = t < T
        aa = _tile(a, sa0, sa1, sa2, sa3, i_b, i_h, t, rk, mt, mk)
        g, G, GC = _chunk_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk, SCALAR)
        dU = _dot(_to_end(aa, G, GC, SCALAR), dS, DOT)  # the state's share of dU, [C, BV]
        W = tl.load(w_in + (chunk * C + rc)[:, None] * K + rk[None, :], mask=mk[None, :], other=0.0)
        dS_prev = _dot(tl.trans(W), dU, DOT)
        p = dstates + chunk * K * V + pS
        dS_prev += tl.load(p, mask=mS, other=0.0)  # Y_n
        tl.debug_barrier()  # every thread's Y_n read before any thread overwrites it
        tl.store(p, dS, mask=mS)
        dS = dS_prev + _decay_state(dS, GC, SCALAR)
    tl.store(dh0 + i_bh * K * V + pS, dS, mask=mS)


def terms_launch(meta: dict) -> dict:
    """The launch options of the kernels of state-independent terms: ``_meta``'s (without ``SHARED``),
    the key axis in blocks of at most ``TERMS_BK``, one software-pipelining stage. Compiled for sm_90a
    at GDN_100m head shapes (benchmarks/results/walks-3/), ``chunk_dwrites_kernel`` at Triton's default
    three stages holds 99 KB of shared memory and spills 228 B a thread, at one stage 49 KB and 124 B."""
    keep = {x: y for x, y in meta.items() if x != "SHARED"}
    return keep | {"BK": min(TERMS_BK, meta["BK"]), "num_stages": 1}


def delta_states(lw, k, v, a, W, U0, h0, states, U, ht, meta: dict):
    """The forward's walk for a delta rule: fills ``states`` [B·H, N, K, V] (each chunk's start
    state), ``U`` [B·H, N·C, V] (= W S + U₀) and ``ht`` [B, H, K, V] from W, U₀ and ``h0`` (fp32)."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    N = states.shape[1]
    sw, sk, sv, sa = (strides(x) for x in (lw, k, v, a))
    terms = terms_launch(meta)
    chunk_writes_kernel[(B * H, N, triton.cdiv(V, meta["BV"]))](
        lw, k, v, *sw, *sk, *sv, states, T, H, K, V, **terms
    )
    walk = walk_launch("states", meta, V)
    chunk_states_delta_kernel[(B * H, triton.cdiv(V, walk["BV"]))](
        lw, a, *sw, *sa, W, U0, h0, states, U, ht, T, H, K, V, **walk
    )


def delta_dstates(lw, q, a, W, do, dht, dstates, dh0, meta: dict):
    """The backward's walk for a delta rule: fills ``dstates`` [B·H, N, K, V] (the gradient of each
    chunk's end state) and ``dh0`` [B, H, K, V] from W, ``do`` [B, T, H, V] and ``dht`` (fp32)."""
    B, T, H, K = q.shape
    V = do.shape[-1]
    N = dstates.shape[1]
    sw, sq, sa = (strides(x) for x in (lw, q, a))
    terms = terms_launch(meta) | {"SHARED": strides(a) == strides(q)}
    chunk_dwrites_kernel[(B * H, N, triton.cdiv(V, meta["BV"]))](
        lw, q, a, *sw, *sq, *sa, W, do, dstates, T, H, K, V, **terms
    )
    walk = walk_launch("dstates", meta, V)
    chunk_dstates_delta_kernel[(B * H, triton.cdiv(V, walk["BV"]))](
        lw, a, *sw, *sa, W, dht, dstates, dh0, T, H, K, V, **walk
    )
