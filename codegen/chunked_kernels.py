"""The chunked forward as one Triton kernel, and the custom op the chunked cell calls.

One program per (batch element × head, block of value columns) holds its ``[K, BV]`` slice of the
state in fp32 registers and walks the chunks in order; inside a chunk every product is a ``tl.dot``
(the algebra is in ``codegen/chunked_torch.py``). The unit lower-triangular solve of the rank-one
corrections is the inverse ``(I - L)⁻¹ = Π_m (I + L^(2^m))`` of the strictly lower (nilpotent) ``L``:
log2(C) pairs of C×C products instead of C dependent row updates.

The backward (``codegen/chunked_backward.py``) recomputes the state at every chunk's start with this
kernel and walks the chunks in reverse; only the inputs are saved. Without a GPU or the interpreter
the same algebra runs in PyTorch (``chunked_torch``) and autograd differentiates it.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .chunked_torch import chunked_torch


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
def _unit_lower_inverse(L, eye, LOG2C: tl.constexpr, PREC: tl.constexpr):
    """(I - L)⁻¹ for a strictly lower triangular L: (I + L)(I + L²)(I + L⁴)…"""
    inv = eye + L
    p = L
    for _ in tl.static_range(LOG2C - 1):
        p = tl.dot(p, p, input_precision=PREC)
        inv = inv + tl.dot(inv, p, input_precision=PREC)
    return inv


@triton.jit
def _correction_fwd(S, qq, kk, vv, aa, bb, g, G, GC, causal, strict, eye, LOG2C: tl.constexpr,
                    SCALAR: tl.constexpr, PREC: tl.constexpr):  # fmt: skip
    """The rank-one correction's share of a chunk's outputs and end state: U = (I - M_ab)⁻¹ (B̃ S + M_ak V)."""
    Gm = G - g
    if SCALAR:
        b_s = bb * tl.exp(Gm)[:, None]
        a_end = aa * tl.exp(GC - G)[:, None]
    else:
        b_s = bb * tl.exp(Gm)
        a_end = aa * tl.exp(GC[None, :] - G)
    inv = _unit_lower_inverse(_decayed(bb, aa, Gm, G, strict, SCALAR, PREC), eye, LOG2C, PREC)
    Mak = _decayed(bb, kk, Gm, G, strict, SCALAR, PREC)
    rhs = tl.dot(b_s, S, input_precision=PREC) + tl.dot(Mak, vv, input_precision=PREC)
    U = tl.dot(inv, rhs, input_precision=PREC)
    out = tl.dot(_decayed(qq, aa, G, G, causal, SCALAR, PREC), U, input_precision=PREC)
    return out, tl.dot(tl.trans(a_end), U, input_precision=PREC)


@triton.jit
def chunked_fwd_kernel(
    lw, q, k, v, a, b, h0, o, ht, states, T, H, K, V,
    C: tl.constexpr, LOG2C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    SCALAR: tl.constexpr, LOWRANK: tl.constexpr, PREC: tl.constexpr, STATES: tl.constexpr,
):  # fmt: skip
    """``STATES``: store the state at every chunk's start (for the backward) instead of the outputs."""
    i_bh, i_v = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    rc, rk, rv = tl.arange(0, C), tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    mk, mv = rk < K, rv < V
    causal = rc[:, None] >= rc[None, :]
    strict = rc[:, None] > rc[None, :]
    eye = tl.where(rc[:, None] == rc[None, :], 1.0, 0.0)
    pS = (i_bh * K + rk[:, None]) * V + rv[None, :]
    S = tl.load(h0 + pS, mask=mk[:, None] & mv[None, :], other=0.0)
    N = tl.cdiv(T, C)
    for n in range(0, N):
        if STATES:
            tl.store(
                states + (i_bh * N + n) * K * V + rk[:, None] * V + rv[None, :],
                S,
                mask=mk[:, None] & mv[None, :],
            )
        t = n * C + rc
        mt = t < T
        row = (i_b * T + t) * H + i_h
        pk, mtk = row[:, None] * K + rk[None, :], mt[:, None] & mk[None, :]
        qq = tl.load(q + pk, mask=mtk, other=0.0).to(tl.float32)
        kk = tl.load(k + pk, mask=mtk, other=0.0).to(tl.float32)
        vv = tl.load(v + row[:, None] * V + rv[None, :], mask=mt[:, None] & mv[None, :], other=0.0)
        vv = vv.to(tl.float32)
        if SCALAR:
            g = tl.load(lw + row, mask=mt, other=0.0)
            G = tl.cumsum(g, 0)
            GC = tl.sum(g, 0)
            q_s = qq * tl.exp(G)[:, None]
            k_end = kk * tl.exp(GC - G)[:, None]
            w_end = tl.exp(GC)
        else:
            g = tl.load(lw + pk, mask=mtk, other=0.0)
            G = tl.cumsum(g, 0)
            GC = tl.sum(g, 0)
            q_s = qq * tl.exp(G)
            k_end = kk * tl.exp(GC[None, :] - G)
            w_end = tl.exp(GC)[:, None]
        Qk = _decayed(qq, kk, G, G, causal, SCALAR, PREC)
        out = tl.dot(q_s, S, input_precision=PREC) + tl.dot(Qk, vv, input_precision=PREC)
        new = tl.dot(tl.trans(k_end), vv, input_precision=PREC)
        if LOWRANK:
            aa = tl.load(a + pk, mask=mtk, other=0.0).to(tl.float32)
            bb = tl.load(b + pk, mask=mtk, other=0.0).to(tl.float32)
            out_a, new_a = _correction_fwd(
                S, qq, kk, vv, aa, bb, g, G, GC, causal, strict, eye, LOG2C, SCALAR, PREC
            )
            out += out_a
            new += new_a
        if not STATES:
            tl.store(o + row[:, None] * V + rv[None, :], out, mask=mt[:, None] & mv[None, :])
        S = w_end * S + new
    tl.store(ht + pS, S, mask=mk[:, None] & mv[None, :])


#: launch settings: the largest block of value columns per program, and warps per program (None:
#: 8 for a key axis of 128 or more, else 4). Not yet measured on a GPU (benchmarks/chunked_sweep.py).
LAUNCH = {"bv": 64, "warps": None}


def warps(K: int) -> int:
    return LAUNCH["warps"] or (8 if K >= 128 else 4)


def blocks(K: int, V: int) -> tuple[int, int]:
    """The key axis whole (padded to a power of two, at least 16: ``tl.dot``'s minimum), the value
    axis in blocks of at most ``LAUNCH["bv"]``."""
    return max(16, triton.next_power_of_2(K)), min(LAUNCH["bv"], max(16, triton.next_power_of_2(V)))


def chunked_forward(lw, q, k, v, ab, h0, chunk: int, precise: bool, states: bool = False):
    """(o [B, T, H, V] fp32, final state [B, H, K, V] fp32) from the Triton kernel; ``states``:
    (the state at every chunk's start [B, H, N, K, V] fp32, final state) instead."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    assert chunk >= 16 and chunk & (chunk - 1) == 0, "the chunk must be a power of two, at least 16"
    BK, BV = blocks(K, V)
    dev = q.device
    o = torch.empty(*((1,) if states else (B, T, H, V)), device=dev)
    st = torch.empty(*((B, H, -(-T // chunk), K, V) if states else (1,)), device=dev)
    ht = torch.empty(B, H, K, V, device=dev, dtype=torch.float32)
    a, b = ab if ab else (q, q)
    args = [x.contiguous() for x in (lw, q, k, v, a, b, h0)]
    chunked_fwd_kernel[(B * H, triton.cdiv(V, BV))](
        *args, o, ht, st, T, H, K, V,
        C=chunk, LOG2C=chunk.bit_length() - 1, BK=BK, BV=BV,
        SCALAR=lw.dim() == 3, LOWRANK=bool(ab), PREC="ieee" if precise else "tf32", STATES=states,
        num_warps=warps(K),
    )  # fmt: skip
    return (st if states else o), ht


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
        from .chunked_backward import chunked_backward

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
