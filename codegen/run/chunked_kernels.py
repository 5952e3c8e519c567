"""The chunked forward as Triton kernels, and the custom op the chunked cell calls.

The algebra is in ``codegen/run/chunked_torch.py``. Per (batch element × head), chunk ``n`` of C steps
with ``S`` the state at its start, the forward is three launches:

1. ``chunk_prep_kernel`` (delta rules only; every chunk at once): the unit lower-triangular inverse
   ``T = (I - M_ab)⁻¹`` by forward substitution (row by row, stable where repeated squaring is not),
   ``W = T B̃`` and ``U₀ = T M_ak V``, so that the corrections are ``U = W S + U₀``.
2. ``chunk_states_kernel`` (chunks in order; one program per block of value columns): stores ``S``,
   ``U = W S + U₀``, and passes ``S ← Γ_C S + K_endᵀ V + A_endᵀ U`` in fp32 registers. Three
   ``tl.dot`` a chunk: the only sequential work.
3. ``chunk_output_kernel`` (every chunk at once): ``O = Q̃ S + Q_k V + Q_a U``.

The backward (``codegen/run/chunked_backward.py``) reruns 1 and 2 (only the inputs are saved), passes the
state's gradient backwards through the chunks, then computes every per-token gradient for all chunks
at once. Without a GPU or the interpreter the same algebra runs in PyTorch (``chunked_torch``) and
autograd differentiates it.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from archdsl.codegen.run.chunked_torch import chunked_torch


def kernel_path() -> str:
    return __file__


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _decayed(x, y, gx, gy, mask, SCALAR: tl.constexpr, PREC: tl.constexpr):
    """M[t, τ] = Σ_i x_t[i] y_τ[i] exp(gx_t[i] - gy_τ[i]) where ``mask``, else 0."""
    # one return after a constexpr if/else: Triton 3.6 compiles the statements after an early return
    if SCALAR:
        m = tl.dot(x, tl.trans(y), input_precision=PREC)
        out = m * tl.exp(tl.where(mask, gx[:, None] - gy[None, :], float("-inf")))
    else:
        m = tl.dot(x * tl.exp(gx), tl.trans(y * tl.exp(-gy)), input_precision=PREC)
        out = tl.where(mask, m, 0.0)
    return out


@triton.jit
def _unit_lower_inverse(L, rc, C: tl.constexpr):
    """(I - L)⁻¹ for a strictly lower triangular L, by forward substitution: row t of the inverse is
    e_t + Σ_{m<t} L[t, m]·(row m), the rows above it already final."""
    inv = tl.where(rc[:, None] == rc[None, :], 1.0, 0.0)
    for t in range(1, C):
        lt = tl.sum(tl.where(rc[:, None] == t, L, 0.0), 0)  # row t of L
        inv = tl.where(rc[:, None] == t, inv + tl.sum(lt[:, None] * inv, 0)[None, :], inv)
    return inv


@triton.jit
def _chunk_decays(lw, row, pk, mt, mtk, SCALAR: tl.constexpr):
    """(g, G, Γ_C): the chunk's log-decays, their inclusive cumulative sum and the chunk's total."""
    if SCALAR:
        g = tl.load(lw + row, mask=mt, other=0.0)
    else:
        g = tl.load(lw + pk, mask=mtk, other=0.0)
    return g, tl.cumsum(g, 0), tl.sum(g, 0)


@triton.jit
def _to_end(x, G, GC, SCALAR: tl.constexpr):
    """x_t decayed from step t to the chunk's end: x_t ⊙ Γ_C / Γ_t."""
    if SCALAR:
        out = x * tl.exp(GC - G)[:, None]
    else:
        out = x * tl.exp(GC[None, :] - G)
    return out


@triton.jit
def _from_start(x, G, SCALAR: tl.constexpr):
    """x_t ⊙ Γ_t."""
    if SCALAR:
        out = x * tl.exp(G)[:, None]
    else:
        out = x * tl.exp(G)
    return out


@triton.jit
def _decay_state(S, GC, SCALAR: tl.constexpr):
    """Γ_C S: the whole state decayed over the chunk."""
    if SCALAR:
        out = tl.exp(GC) * S
    else:
        out = tl.exp(GC)[:, None] * S
    return out


@triton.jit
def chunk_prep_kernel(
    lw, k, v, a, b, inv_out, w_out, u0_out, T, H, K, V,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, SCALAR: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Per chunk: T = (I - M_ab)⁻¹ [C, C], W = T B̃ [C, K] and U₀ = T M_ak V [C, V]."""
    i_bh, n = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    N = tl.cdiv(T, C)
    rc, rk = tl.arange(0, C), tl.arange(0, BK)
    t = n * C + rc
    mt, mk = t < T, rk < K
    row = (i_b * T + t) * H + i_h
    pk, mtk = row[:, None] * K + rk[None, :], mt[:, None] & mk[None, :]
    kk = tl.load(k + pk, mask=mtk, other=0.0).to(tl.float32)
    aa = tl.load(a + pk, mask=mtk, other=0.0).to(tl.float32)
    bb = tl.load(b + pk, mask=mtk, other=0.0).to(tl.float32)
    g, G, GC = _chunk_decays(lw, row, pk, mt, mtk, SCALAR)
    Gm = G - g  # the decay before step t
    strict = rc[:, None] > rc[None, :]
    inv = _unit_lower_inverse(_decayed(bb, aa, Gm, G, strict, SCALAR, PREC), rc, C)
    chunk = i_bh * N + n
    tl.store(inv_out + (chunk * C + rc[:, None]) * C + rc[None, :], inv)
    out_row = chunk * C + rc
    W = tl.dot(inv, _from_start(bb, Gm, SCALAR), input_precision=PREC)
    tl.store(w_out + out_row[:, None] * K + rk[None, :], W, mask=mk[None, :])
    IM = tl.dot(inv, _decayed(bb, kk, Gm, G, strict, SCALAR, PREC), input_precision=PREC)
    for i_v in range(0, tl.cdiv(V, BV)):
        rv = i_v * BV + tl.arange(0, BV)
        mv = rv < V
        vv = tl.load(v + row[:, None] * V + rv[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
        U0 = tl.dot(IM, vv.to(tl.float32), input_precision=PREC)
        tl.store(u0_out + out_row[:, None] * V + rv[None, :], U0, mask=mv[None, :])


@triton.jit
def chunk_states_kernel(
    lw, k, v, a, w_in, u0_in, h0, states, u_out, ht, T, H, K, V,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, LOWRANK: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """The chunks in order: stores each chunk's start state (and its corrections U), passes the state."""
    i_bh, i_v = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    rc, rk, rv = tl.arange(0, C), tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    mk, mv = rk < K, rv < V
    pS, mS = rk[:, None] * V + rv[None, :], mk[:, None] & mv[None, :]
    S = tl.load(h0 + i_bh * K * V + pS, mask=mS, other=0.0)
    N = tl.cdiv(T, C)
    for n in range(0, N):
        chunk = i_bh * N + n
        tl.store(states + chunk * K * V + pS, S, mask=mS)
        t = n * C + rc
        mt = t < T
        row = (i_b * T + t) * H + i_h
        pk, mtk = row[:, None] * K + rk[None, :], mt[:, None] & mk[None, :]
        kk = tl.load(k + pk, mask=mtk, other=0.0).to(tl.float32)
        vv = tl.load(v + row[:, None] * V + rv[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
        g, G, GC = _chunk_decays(lw, row, pk, mt, mtk, SCALAR)
        new = tl.dot(tl.trans(_to_end(kk, G, GC, SCALAR)), vv.to(tl.float32), input_precision=PREC)
        if LOWRANK:
            out_row = chunk * C + rc
            W = tl.load(w_in + out_row[:, None] * K + rk[None, :], mask=mk[None, :], other=0.0)
            pu = out_row[:, None] * V + rv[None, :]
            U = tl.dot(W, S, input_precision=PREC) + tl.load(u0_in + pu, mask=mv[None, :], other=0.0)
            tl.store(u_out + pu, U, mask=mv[None, :])
            aa = tl.load(a + pk, mask=mtk, other=0.0).to(tl.float32)
            new += tl.dot(tl.trans(_to_end(aa, G, GC, SCALAR)), U, input_precision=PREC)
        S = _decay_state(S, GC, SCALAR) + new
    tl.store(ht + i_bh * K * V + pS, S, mask=mS)


@triton.jit
def chunk_output_kernel(
    lw, q, k, v, a, states, u_in, o, T, H, K, V,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, LOWRANK: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Every chunk at once: O = Q̃ S + Q_k V (+ Q_a U)."""
    i_bh, n, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    N = tl.cdiv(T, C)
    rc, rk, rv = tl.arange(0, C), tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    mk, mv = rk < K, rv < V
    chunk = i_bh * N + n
    S = tl.load(
        states + chunk * K * V + rk[:, None] * V + rv[None, :], mask=mk[:, None] & mv[None, :], other=0.0
    )
    t = n * C + rc
    mt = t < T
    row = (i_b * T + t) * H + i_h
    pk, mtk = row[:, None] * K + rk[None, :], mt[:, None] & mk[None, :]
    pv, mtv = row[:, None] * V + rv[None, :], mt[:, None] & mv[None, :]
    qq = tl.load(q + pk, mask=mtk, other=0.0).to(tl.float32)
    kk = tl.load(k + pk, mask=mtk, other=0.0).to(tl.float32)
    vv = tl.load(v + pv, mask=mtv, other=0.0).to(tl.float32)
    g, G, GC = _chunk_decays(lw, row, pk, mt, mtk, SCALAR)
    causal = rc[:, None] >= rc[None, :]
    out = tl.dot(_from_start(qq, G, SCALAR), S, input_precision=PREC)
    out += tl.dot(_decayed(qq, kk, G, G, causal, SCALAR, PREC), vv, input_precision=PREC)
    if LOWRANK:
        aa = tl.load(a + pk, mask=mtk, other=0.0).to(tl.float32)
        U = tl.load(u_in + (chunk * C + rc)[:, None] * V + rv[None, :], mask=mv[None, :], other=0.0)
        out += tl.dot(_decayed(qq, aa, G, G, causal, SCALAR, PREC), U, input_precision=PREC)
    tl.store(o + pv, out, mask=mtv)


#: launch settings: the largest block of value columns per program, warps per program (None: 8 for a
#: key axis of 128 or more, else 4), and software-pipelining stages of the two kernels that walk the
#: chunks (each stage holds a chunk's [C, K] tiles in shared memory).
LAUNCH = {"bv": 64, "warps": None, "stages": 1}


def warps(K: int) -> int:
    return LAUNCH["warps"] or (8 if K >= 128 else 4)


def blocks(K: int, V: int) -> tuple[int, int]:
    """The key axis whole (padded to a power of two, at least 16: ``tl.dot``'s minimum), the value
    axis in blocks of at most ``LAUNCH["bv"]``."""
    return max(16, triton.next_power_of_2(K)), min(LAUNCH["bv"], max(16, triton.next_power_of_2(V)))


def _meta(lw, q, v, ab, chunk: int, precise: bool) -> dict:
    assert chunk >= 16 and chunk & (chunk - 1) == 0, "the chunk must be a power of two, at least 16"
    BK, BV = blocks(q.shape[-1], v.shape[-1])
    return dict(
        C=chunk, BK=BK, BV=BV, SCALAR=lw.dim() == 3, PREC="ieee" if precise else "tf32",
        num_warps=warps(q.shape[-1]),
    )  # fmt: skip


def chunk_states(lw, q, k, v, ab, h0, chunk: int, precise: bool):
    """Kernels 1 and 2: (the state at every chunk's start [B·H, N, K, V], final state [B, H, K, V],
    the corrections U [B·H, N·C, V] or None, W [B·H, N·C, K] or None, T⁻¹ [B·H, N, C, C] or None)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = -(-T // chunk)
    meta = _meta(lw, q, v, ab, chunk, precise)
    dev, f32 = q.device, torch.float32
    states = torch.empty(B * H, N, K, V, device=dev, dtype=f32)
    ht = torch.empty(B, H, K, V, device=dev, dtype=f32)
    U = W = inv = None
    a = q
    if ab:
        a, b = ab
        inv = torch.empty(B * H, N, chunk, chunk, device=dev, dtype=f32)
        W = torch.empty(B * H, N * chunk, K, device=dev, dtype=f32)
        U0 = torch.empty(B * H, N * chunk, V, device=dev, dtype=f32)
        U = torch.empty_like(U0)
        prep = {x: meta[x] for x in ("C", "BK", "BV", "SCALAR", "PREC", "num_warps")}
        chunk_prep_kernel[(B * H, N)](lw, k, v, a, b, inv, W, U0, T, H, K, V, **prep)
    grid = (B * H, triton.cdiv(V, meta["BV"]))
    chunk_states_kernel[grid](
        lw, k, v, a, W if ab else q, U0 if ab else q, h0, states, U if ab else q, ht, T, H, K, V,
        LOWRANK=bool(ab), num_stages=LAUNCH["stages"], **meta,
    )  # fmt: skip
    return states, ht, U, W, inv


def chunked_forward(lw, q, k, v, ab, h0, chunk: int, precise: bool):
    """(o [B, T, H, V] fp32, final state [B, H, K, V] fp32) from the Triton kernels."""
    lw, q, k, v, h0 = (x.contiguous() for x in (lw, q, k, v, h0))
    ab = [x.contiguous() for x in ab]
    B, T, H, K = q.shape
    V = v.shape[-1]
    states, ht, U, _, _ = chunk_states(lw, q, k, v, ab, h0, chunk, precise)
    meta = _meta(lw, q, v, ab, chunk, precise)
    o = torch.empty(B, T, H, V, device=q.device, dtype=torch.float32)
    grid = (B * H, states.shape[1], triton.cdiv(V, meta["BV"]))
    chunk_output_kernel[grid](
        lw, q, k, v, ab[0] if ab else q, states, U if ab else q, o, T, H, K, V, LOWRANK=bool(ab), **meta
    )
    return o, ht


_OPS: dict[str, object] = {}


def _op(chunk: int, precise: bool):
    """``archdsl::chunked_<C>_<precision>([lw, q, k, v, *ab], h0) -> [o, final state]`` with autograd."""
    name = f"archdsl::chunked_c{chunk}_{'ieee' if precise else 'tf32'}"
    if name in _OPS:
        return _OPS[name]

    @torch.library.custom_op(name, mutates_args=())
    def op(xs: list[torch.Tensor], h0: torch.Tensor) -> list[torch.Tensor]:
        lw, q, k, v, *ab = xs
        if q.is_cuda or _interpreted():
            return list(chunked_forward(lw, q, k, v, ab, h0, chunk, precise))
        with torch.no_grad():
            return [x.contiguous() for x in chunked_torch(lw, q, k, v, ab, h0, chunk)]

    @op.register_fake
    def _(xs, h0):
        B, T, H, _ = xs[1].shape
        return [xs[1].new_empty(B, T, H, xs[3].shape[-1], dtype=torch.float32), torch.empty_like(h0)]

    @torch.library.custom_op(name + "_bwd", mutates_args=())
    def bwd(
        xs: list[torch.Tensor], h0: torch.Tensor, do: torch.Tensor, dht: torch.Tensor
    ) -> list[torch.Tensor]:
        from archdsl.codegen.run.chunked_backward import chunked_backward

        lw, q, k, v, *ab = xs
        return chunked_backward(lw, q, k, v, ab, h0, do, dht, chunk, precise)

    @bwd.register_fake
    def _(xs, h0, do, dht):
        return [*(torch.empty_like(x) for x in xs), torch.empty_like(h0)]

    def setup_context(ctx, inputs, output):
        xs, h0 = inputs
        ctx.save_for_backward(*xs, h0)

    def backward(ctx, grads):
        *xs, h0 = ctx.saved_tensors
        do, dht = grads
        do = torch.zeros_like(xs[3], dtype=torch.float32) if do is None else do.float().contiguous()
        dht = torch.zeros_like(h0) if dht is None else dht.float().contiguous()
        if xs[1].is_cuda or _interpreted():
            out = bwd(list(xs), h0, do, dht)
        else:
            out = _recompute_grads(list(xs), h0, do, dht, chunk)
        return out[:-1], out[-1]

    op.register_autograd(backward, setup_context=setup_context)
    _OPS[name] = op
    return op


def _recompute_grads(xs, h0, do, dht, chunk: int) -> list:
    """The gradients of the chunked recurrence, recomputed through its PyTorch form (plain autograd:
    a custom op's body runs below the autograd dispatch key, so this stays outside one)."""
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(True) for x in (*xs, h0)]
        lw, q, k, v, *rest = leaves
        o, hT = chunked_torch(lw, q, k, v, rest[:-1], rest[-1], chunk)
        return list(torch.autograd.grad([o, hT], leaves, [do, dht]))


def chunked_linear(lw, q, k, v, ab, h0, chunk: int, dtype: torch.dtype):
    """The chunked recurrence on fp32 coefficients; ``dtype``: the layer's (fp32 runs use exact
    fp32 products, bf16/fp16 runs TF32 tensor cores)."""
    xs = [x.float().contiguous() for x in (lw, q, k, v, *ab)]
    o, ht = _op(chunk, dtype in (torch.float32, torch.float64))(xs, h0.float().contiguous())
    return o, ht
