"""A layer's short causal convolutions as Triton kernels: ``silu(conv(x, w) + b)`` in one pass.

``archdsl/convolve.py`` runs a spec's ``conv[c](a, w)`` as one depthwise ``conv1d``; around it PyTorch
would cast the projection's bf16 output to fp32, pad it, convolve, add the bias, apply silu and hand a
transposed result to the next kernel (a copy there), and the backward as many kernels again. Here the
forward is one kernel that reads ``x`` in its own type and strides (a slice of the projection's
output) and writes ``y`` [N, T, C] in fp32, contiguous (the layer's values are fp32). The backward
(``_conv_bwd_walk``) is one kernel a (batch row, segment of tokens, block of channels) that walks the
segment's blocks of tokens from the last: it computes the pre-activation's gradient G once a token,
carries G at the K-1 tokens after the block (G[t+j] is what dx[t] and dw need) through a few rows of
scratch memory of its own, writes ``dx`` in ``x``'s type and keeps the products for the weight's and
the bias's gradients in registers over the walk (summed over tokens at its end: one partial a
program, summed after it); the weights are read once a program. ``x`` and
``dy`` are read once but for K-1 rows around a segment (the K-1 shifted tiles of ``x`` that the
pre-activation needs are the same rows again, from the cache); ``dy`` in any type and strides. The
values are the reference's to rounding (fp32 throughout).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from archdsl.codegen.run.ops import register

from archdsl.recompute import recomputable

#: the forward's block of tokens and channels a program, and its warps. On an H200 (round-20 call 2,
#: GDN_100m's three convolutions, each run twice a forward+backward: the backward remakes them), µs a
#: launch: 50.7 at 32 x 64 (the setting until then), 40.2 at 64 x 64, 34.3 at 32 x 128, 33.3 at
#: 16 x 128, 43.2 at 128 x 64 with 8 warps, 65.5 at 64 x 128 with 8 warps.
FORWARD = {"bt": 16, "bc": 128, "warps": 4}

#: the backward: ``kernel`` ``walk`` (``_conv_bwd_walk``) or ``halo`` (``_conv_bwd_halo``, the kernel
#: before it, kept to time one against the other); ``bt``, ``bc``: tokens and channels a block,
#: ``warps`` a program's; ``seg``: the walk's tokens a program (rounded down to a multiple of ``bt``).
#: Compiled for sm_90a by Triton 3.6 at K 4 with silu (benchmarks/kernel_resources.py,
#: benchmarks/results/conv-walk/): the walk at 16 x 64 uses 64 registers with 8 warps (4 programs an
#: SM), 128 with 4; at 32 x 64 128 and 234; no spills. The halo kernel at 32 x 64 and 4 warps (its
#: setting until now) 255 registers. On an H100 (benchmarks/results/chunked-7/call2-conv.md, one call),
#: the three convolutions' backward of GDN_100m / Mamba2_100m: the halo kernel at 32 x 64, 4 warps
#: 0.712 / 0.538 ms; the walk at 16 x 64, 8 warps, 128 tokens 0.370 / 0.297; at 16 x 32, 4 warps
#: 0.271 / 0.253 (the fastest of the ten settings at both shapes: this default).
BACKWARD = {"kernel": "walk", "bt": 16, "bc": 32, "warps": 4, "seg": 128}


@triton.jit
def _pre(
    x, w, bias, base, s, T, c, cm, sxt, sxc,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    """The convolution (plus bias) at tokens ``s`` [BT] and channels ``c`` [BC], in fp32."""
    acc = tl.zeros((BT, BC), tl.float32)
    for k in tl.static_range(K):
        r = s - (K - 1) + k
        m = ((r >= 0) & (r < T))[:, None] & cm[None, :]
        xv = tl.load(x + base + r[:, None] * sxt + c[None, :] * sxc, mask=m, other=0.0).to(tl.float32)
        acc += xv * tl.load(w + c * K + k, mask=cm, other=0.0)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias + c, mask=cm, other=0.0)[None, :]
    return acc


@triton.jit
def _conv_fwd(
    x, w, bias, y, T, C, sxb, sxt, sxc,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    n, tb, cb = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    t = (tb * BT + tl.arange(0, BT)).to(tl.int64)  # T * strides may pass 2**31
    c = cb * BC + tl.arange(0, BC)
    cm = c < C
    acc = _pre(x, w, bias, n * sxb, t, T, c, cm, sxt, sxc, K, HAS_BIAS, BT, BC)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(y + n * T * C + t[:, None] * C + c[None, :], acc, mask=(t < T)[:, None] & cm[None, :])


@triton.jit
def _conv_bwd_halo(
    x, w, bias, dy, dx, dw, db, T, C, sxb, sxt, sxc,
    K: tl.constexpr, KP: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    BT: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    """``_conv_bwd_walk``'s results (the kernel before it, kept to time against it) at a block of
    ``BT`` tokens a program, each of the 2K-1 shifted tiles of ``x`` read once: the pre-activations at
    tokens ``t + j`` (j < K, padded to ``KP``) as one [BT, KP, BC] tile summed from them, then the
    pre-activation's gradient ``G`` at those tokens (K times a token), dx = Σ_j G_j w[K-1-j], db from
    G_0 and dw[k] = Σ_t G_{K-1-k}[t] x[t]; this program's partial sums of dw and db."""
    n, tb, cb = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    t = (tb * BT + tl.arange(0, BT)).to(tl.int64)  # T * strides may pass 2**31
    c = cb * BC + tl.arange(0, BC)
    j = tl.arange(0, KP)
    cm, mj = c < C, j < K
    pre = tl.zeros((BT, KP, BC), tl.float32)
    x0 = tl.zeros((BT, BC), tl.float32)
    for d in tl.static_range(2 * K - 1):  # x at tokens t + d - (K-1) feeds y at t + j by w[d - j]
        r = t + d - (K - 1)
        m = ((r >= 0) & (r < T))[:, None] & cm[None, :]
        xv = tl.load(x + n * sxb + r[:, None] * sxt + c[None, :] * sxc, mask=m, other=0.0).to(tl.float32)
        mw = ((d - j >= 0) & (d - j < K) & mj)[:, None] & cm[None, :]
        wd = tl.load(w + c[None, :] * K + (d - j)[:, None], mask=mw, other=0.0)
        pre += xv[:, None, :] * wd[None, :, :]
        if d == K - 1:
            x0 = xv
    if HAS_BIAS:
        pre += tl.load(bias + c, mask=cm, other=0.0)[None, None, :]
    s = t[:, None] + j[None, :]
    ms = ((s < T) & mj[None, :])[:, :, None] & cm[None, None, :]
    G = tl.load(dy + n * T * C + s[:, :, None] * C + c[None, None, :], mask=ms, other=0.0).to(tl.float32)
    if SILU:
        sg = tl.sigmoid(pre)
        G = G * sg * (1.0 + pre * (1.0 - sg))
    mjc = mj[:, None] & cm[None, :]
    wr = tl.load(w + c[None, :] * K + (K - 1 - j)[:, None], mask=mjc, other=0.0)
    part = (n * tl.num_programs(1) + tb) * K * C
    if HAS_BIAS:
        tl.store(db + part // K + c, tl.sum(tl.sum(tl.where(j[None, :, None] == 0, G, 0.0), 1), 0), mask=cm)
    tl.store(dw + part + (K - 1 - j)[:, None] * C + c[None, :], tl.sum(G * x0[:, None, :], 0), mask=mjc)
    acc = tl.sum(G * wr[None, :, :], 1)
    tl.store(dx + n * T * C + t[:, None] * C + c[None, :], acc, mask=(t < T)[:, None] & cm[None, :])


@triton.jit
def _grad_at(
    x, ws, bias, dy, t0, lim, c, cm, sxt, sxc, syt, syc,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    """(G, x) at tokens ``t0 + [0, BT)`` and channels ``c`` (``x``, ``dy``: this batch row's
    pointers; ``ws``: the K taps' weights): the pre-activation's gradient and ``x`` in fp32, zero at
    tokens ``lim`` and later."""
    r = tl.arange(0, BT)
    m = (t0 + r < lim)[:, None] & cm[None, :]
    xo = r[:, None] * sxt + c[None, :] * sxc  # offsets in the block: int32
    xt = x + tl.cast(t0, tl.int64) * sxt  # T * strides may pass 2**31
    g = tl.load(dy + tl.cast(t0, tl.int64) * syt + r[:, None] * syt + c[None, :] * syc, mask=m, other=0.0)
    g = g.to(tl.float32)
    xv = tl.load(xt + xo, mask=m, other=0.0).to(tl.float32)
    if SILU:  # the pre-activation u; without silu G is dy
        u = xv * ws[K - 1][None, :]
        for k in tl.static_range(K - 1):
            mr = (t0 + r - (K - 1 - k) >= 0)[:, None] & m
            u += tl.load(xt - (K - 1 - k) * sxt + xo, mask=mr, other=0.0).to(tl.float32) * ws[k][None, :]
        if HAS_BIAS:
            u += tl.load(bias + c, mask=cm, other=0.0)[None, :]
        sg = tl.sigmoid(u)
        g = g * sg * (1.0 + u * (1.0 - sg))
    return g, xv


@triton.jit
def _conv_bwd_walk(
    x, w, bias, dy, dx, dw, db, ring, T, C, L, sxb, sxt, sxc, syb, syt, syc,
    K: tl.constexpr, KP: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    BT: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    """dx at the ``L`` tokens of segment ``sg`` (a multiple of ``BT``) and this program's sums of dw
    [K, C] and db [C] over them, walking the segment's blocks of ``BT`` tokens from the last: each
    block's gradient ``G`` computed once and written to this program's rows of ``ring`` after ``G``
    at the ``K-1`` tokens that follow (the block walked before; first, those past the segment), then
    read back shifted by j: dx = Σ_j G[t+j] w[K-1-j] and dw[K-1-j] += Σ_t x[t] G[t+j], the products
    summed in registers over the walk and over tokens at its end. Run with one pipeline stage: a
    load of ``ring`` must not move above the barrier that orders it."""
    n, sg, cb = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    c = cb * BC + tl.arange(0, BC)
    cm = c < C
    r = tl.arange(0, BT)
    x, dy, dx = x + n * sxb, dy + n * syb, dx + n * T * C
    ws, dws = (), ()  # a tap's weights [BC], read once; the products for dw [BT, BC] by tap
    for k in tl.static_range(K):
        ws = ws + (tl.load(w + c * K + k, mask=cm, other=0.0),)
        dws = dws + (tl.zeros((BT, BC), tl.float32),)
    t1 = sg * L + tl.cdiv(tl.minimum(L, T - sg * L), BT) * BT  # the token after the last block
    gn, _ = _grad_at(
        x, ws, bias, dy, t1, tl.minimum(T, t1 + K - 1), c, cm, sxt, sxc, syt, syc, K, HAS_BIAS, SILU, BT, BC
    )  # fmt: skip
    ring += ((n * tl.num_programs(1) + sg) * tl.num_programs(2) + cb) * (BT + KP) * BC
    ro = r[:, None] * BC + tl.arange(0, BC)[None, :]
    tl.store(ring + BT * BC + ro, gn, mask=(r < KP)[:, None])
    dbs = tl.zeros((BT, BC), tl.float32)
    for i in range((t1 - sg * L) // BT):
        t0 = t1 - (i + 1) * BT
        g, x0 = _grad_at(x, ws, bias, dy, t0, T, c, cm, sxt, sxc, syt, syc, K, HAS_BIAS, SILU, BT, BC)
        tl.store(ring + ro, g)
        tl.debug_barrier()
        dbs += g
        acc = g * ws[K - 1][None, :]
        nxt = ()
        for j in tl.static_range(K):  # G at t + j: this block's rows j.., then the carried ones
            gj = g if j == 0 else tl.load(ring + j * BC + ro)
            if j > 0:
                acc += gj * ws[K - 1 - j][None, :]
            nxt = (dws[K - 1 - j] + x0 * gj,) + nxt
        dws = nxt
        mo = (t0 + r < T)[:, None] & cm[None, :]
        tl.store(dx + tl.cast(t0, tl.int64) * C + r[:, None] * C + c[None, :], acc, mask=mo)
        tl.debug_barrier()  # every thread of the program has read the carried rows: replace them
        tl.store(ring + BT * BC + ro, g, mask=(r < KP)[:, None])
    part = n * tl.num_programs(1) + sg
    for k in tl.static_range(K):
        tl.store(dw + (part * K + k) * C + c, tl.sum(dws[k], 0), mask=cm)
    if HAS_BIAS:
        tl.store(db + part * C + c, tl.sum(dbs, 0), mask=cm)


def _grid(x: torch.Tensor, bt: int, bc: int):
    N, T, C = x.shape
    return N, triton.cdiv(T, bt), triton.cdiv(C, bc)


def _forward(x, w, b=None, *, silu: bool):
    N, T, C = x.shape
    has_bias, b = b is not None, w if b is None else b
    y = torch.empty(N, T, C, device=x.device, dtype=torch.float32)
    bt, bc = FORWARD["bt"], FORWARD["bc"]
    _conv_fwd[_grid(x, bt, bc)](
        x, w, b, y, T, C, *x.stride(), K=w.shape[1], HAS_BIAS=has_bias, SILU=silu, BT=bt, BC=bc,
        num_warps=FORWARD["warps"],
    )  # fmt: skip
    return y


def _backward(x, w, b=None, *, dy, silu: bool):
    N, T, C = x.shape
    has_bias, b = b is not None, w if b is None else b
    K, KP, bt, bc = w.shape[1], triton.next_power_of_2(w.shape[1]), BACKWARD["bt"], BACKWARD["bc"]
    walk = BACKWARD["kernel"] == "walk"
    seg = max(bt, BACKWARD["seg"] // bt * bt) if walk else bt  # tokens a program
    grid = _grid(x, seg, bc)
    dx = torch.empty(N, T, C, device=x.device, dtype=x.dtype)
    dw = torch.empty(N * grid[1], K, C, device=x.device, dtype=torch.float32)
    db = torch.empty(N * grid[1], C, device=x.device, dtype=torch.float32) if has_bias else dw
    if walk:
        ring = torch.empty(grid[0] * grid[1] * grid[2] * (bt + KP) * bc, device=x.device)
        _conv_bwd_walk[grid](
            x, w, b, dy, dx, dw, db, ring, T, C, seg, *x.stride(), *dy.stride(),
            K=K, KP=KP, HAS_BIAS=has_bias, SILU=silu, BT=bt, BC=bc,
            num_warps=BACKWARD["warps"], num_stages=1,
        )  # fmt: skip
    else:
        _conv_bwd_halo[grid](
            x, w, b, dy.contiguous(), dx, dw, db, T, C, *x.stride(),
            K=K, KP=KP, HAS_BIAS=has_bias, SILU=silu, BT=bt, BC=bc, num_warps=BACKWARD["warps"],
        )  # fmt: skip
    return [dx, dw.sum(0).t().contiguous(), *([db.sum(0)] if has_bias else [])]


def conv_op(has_bias: bool, silu: bool):
    """``archdsl::shortconv_<bias><silu>``: ``([x, w, b]) -> [y]`` (``[x, w]`` without a bias),
    registered on its first request (``ops.register`` keeps it by name)."""

    def forward(xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [_forward(*xs, silu=silu)]

    def fake(xs):
        return [xs[0].new_empty(xs[0].shape, dtype=torch.float32)]

    def backward(xs: list[torch.Tensor], dy: torch.Tensor) -> list[torch.Tensor]:
        return _backward(*xs, dy=dy, silu=silu)

    def backward_fake(xs, dy):
        return [torch.empty_like(x) for x in xs]

    def save(ctx, inputs, output):
        ctx.save_for_backward(*inputs[0])

    def grads(ctx, out_grads, bwd):
        xs = list(ctx.saved_tensors)
        (dy,) = out_grads
        dy = torch.zeros(xs[0].shape, device=xs[0].device) if dy is None else dy
        return (bwd(xs, dy),)

    return register(
        f"archdsl::shortconv_{int(has_bias)}{int(silu)}", forward, fake, backward, backward_fake, save, grads
    )


def short_conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, silu: bool) -> torch.Tensor:
    """``(x [N, T, C] any float type and strides, w [C, K], bias [C] or None) -> y`` [N, T, C] fp32:
    ``y[t] = act(b + Σ_k w[k] x[t - (K-1) + k])`` (zeros before the first token; ``act`` silu or
    none), with its gradients (``dx`` in ``x``'s type)."""
    w = w.float().contiguous()
    b = [] if bias is None else [bias.float().contiguous()]
    y = conv_op(bias is not None, silu)([x, w, *b])[0]
    # saved by its readers (fp32, a projection output's width), remade from x (which dy needs anyway)
    recomputable([y], lambda *xs: [_forward(*xs, silu=silu)], [x, w, *b])
    return y
