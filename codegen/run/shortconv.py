"""A layer's short causal convolutions as Triton kernels: ``silu(conv(x, w) + b)`` in one pass.

``archdsl/convolve.py`` runs a spec's ``conv[c](a, w)`` as one depthwise ``conv1d``; around it PyTorch
would cast the projection's bf16 output to fp32, pad it, convolve, add the bias, apply silu and hand a
transposed result to the next kernel (a copy there), and the backward as many kernels again. Here the
forward is one kernel that reads ``x`` in its own type and strides (a slice of the projection's
output) and writes ``y`` [N, T, C] in fp32, contiguous; the backward one kernel that recomputes the
pre-activation at the K tokens each token feeds from the 2K-1 shifted tiles of ``x`` (each read
once), writes ``dx`` in ``x``'s type and each program's partial sums of the weight's and the bias's
gradients, summed after it. The values are the reference's to rounding (fp32 throughout).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from archdsl.codegen.run.ops import register

BT, BC = 32, 64  # tokens and channels per program

#: the backward: ``halo`` picks ``_conv_bwd_halo`` (each shifted tile of ``x`` read once) or, False,
#: ``_conv_bwd`` (the pre-activation recomputed for each of the K tokens a token feeds); ``bt``: its
#: tokens per program (channels: ``BC``). Compiled for sm_90a at K 4 with silu, 4 warps (ptxas):
#: ``_conv_bwd`` at 32 tokens uses 255 registers and spills 100-120 bytes, at 16 none (172-182
#: registers); ``_conv_bwd_halo`` at 32 spills 16-112 bytes, at 16 none (160-166 registers). Measured
#: on an H100 all the same (benchmarks/shortconv_bwd.py, benchmarks/results/chunked-6/conv.md), the
#: three convolutions' backward of GDN_100m / Mamba2_100m: halo at 32 tokens 0.712 / 0.540 ms, at 16
#: 0.721 / 0.543; recomputing at 32 0.718 / 0.578, at 16 1.074 / 0.839.
BACKWARD = {"halo": True, "bt": 32}


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
def _conv_bwd(
    x, w, bias, dy, dx, dw, db, T, C, sxb, sxt, sxc,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    """dx at this program's tokens from the pre-activation's gradient at the K tokens each feeds;
    this program's partial sums of dw [K, C] and db [C] at ``(n, tb)``."""
    n, tb, cb = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    t = (tb * BT + tl.arange(0, BT)).to(tl.int64)  # T * strides may pass 2**31
    c = cb * BC + tl.arange(0, BC)
    cm = c < C
    acc = tl.zeros((BT, BC), tl.float32)
    part = (n * tl.num_programs(1) + tb) * K * C
    for j in tl.static_range(K):  # token t feeds y at t + j through the weight K-1-j
        s = t + j
        m = (s < T)[:, None] & cm[None, :]
        g = tl.load(dy + n * T * C + s[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
        if SILU:
            u = _pre(x, w, bias, n * sxb, s, T, c, cm, sxt, sxc, K, HAS_BIAS, BT, BC)
            sg = tl.sigmoid(u)
            g = g * sg * (1.0 + u * (1.0 - sg))
        acc += g * tl.load(w + c * K + (K - 1 - j), mask=cm, other=0.0)[None, :]
        if j == 0:  # the gradient at this program's own tokens: the weight's and the bias's sums
            if HAS_BIAS:
                tl.store(db + part // K + c, tl.sum(g, 0), mask=cm)
            for k in tl.static_range(K):
                r = t - (K - 1) + k
                mr = ((r >= 0) & (r < T))[:, None] & cm[None, :]
                xv = tl.load(x + n * sxb + r[:, None] * sxt + c[None, :] * sxc, mask=mr, other=0.0)
                tl.store(dw + part + k * C + c, tl.sum(g * xv.to(tl.float32), 0), mask=cm)
    tl.store(dx + n * T * C + t[:, None] * C + c[None, :], acc, mask=(t < T)[:, None] & cm[None, :])


@triton.jit
def _conv_bwd_halo(
    x, w, bias, dy, dx, dw, db, T, C, sxb, sxt, sxc,
    K: tl.constexpr, KP: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    BT: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    """``_conv_bwd``'s results, each of the 2K-1 shifted tiles of ``x`` read once: the pre-activations
    at tokens ``t + j`` (j < K, padded to ``KP``) as one [BT, KP, BC] tile summed from them, then the
    pre-activation's gradient ``G`` at those tokens, dx = Σ_j G_j w[K-1-j], db from G_0 and dw[k] =
    Σ_t G_{K-1-k}[t] x[t] (the products of ``_conv_bwd``'s dw[k] = Σ_s G(s) x[s-(K-1)+k], summed over
    the tokens s - (K-1-k) that this program owns)."""
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


def _grid(x: torch.Tensor, bt: int = BT):
    N, T, C = x.shape
    return N, triton.cdiv(T, bt), triton.cdiv(C, BC)


def _forward(x, w, b=None, *, silu: bool):
    N, T, C = x.shape
    has_bias, b = b is not None, w if b is None else b
    y = torch.empty(N, T, C, device=x.device, dtype=torch.float32)
    _conv_fwd[_grid(x)](
        x, w, b, y, T, C, *x.stride(), K=w.shape[1], HAS_BIAS=has_bias, SILU=silu, BT=BT, BC=BC
    )  # fmt: skip
    return y


def _backward(x, w, b=None, *, dy, silu: bool):
    N, T, C = x.shape
    has_bias, b = b is not None, w if b is None else b
    K = w.shape[1]
    bt = BACKWARD["bt"]
    grid = _grid(x, bt)
    dx = torch.empty(N, T, C, device=x.device, dtype=x.dtype)
    dw = torch.empty(N * grid[1], K, C, device=x.device, dtype=torch.float32)
    db = torch.empty(N * grid[1], C, device=x.device, dtype=torch.float32) if has_bias else dw
    if BACKWARD["halo"]:
        _conv_bwd_halo[grid](
            x, w, b, dy.contiguous(), dx, dw, db, T, C, *x.stride(),
            K=K, KP=triton.next_power_of_2(K), HAS_BIAS=has_bias, SILU=silu, BT=bt, BC=BC,
        )  # fmt: skip
    else:
        _conv_bwd[grid](
            x, w, b, dy.contiguous(), dx, dw, db, T, C, *x.stride(),
            K=K, HAS_BIAS=has_bias, SILU=silu, BT=bt, BC=BC,
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
    return conv_op(bias is not None, silu)([x, w, *b])[0]
