"""The per-step latency floor of E88's recurrence on one GPU, as Triton micro-kernels.

Each kernel runs the dependent arithmetic of E88's step — the contractions with the state, the tanh,
the outer-product update — at the compiled kernel's grid and register layout (one program per batch
element, head and tile of the value axis; the state tile in registers), but with every per-token value
held in registers: no loads, no stores inside the loop. What they take is what the step costs with
all memory traffic removed, so ``floor / measured`` is the fraction of the floor a kernel achieves.

- forward: ``r = sum_i S k; S = tanh(alpha S + k (v - r)); o = sum_i S q`` per step;
- backward: the segment recompute (``r``, ``tanh``) and the reverse step's dependent chain
  (``dpre = (dS + q dy)(1 - S'^2); dd = sum_i dpre k; dS = alpha dpre - k dd``) plus its
  value-axis sums (``sum_j S' dy``, ``sum_j dpre delta``), per step;
- backward with every state kept (``kept``: the loop at a checkpoint stride of 1, whose forward keeps
  each step's ``S`` and ``delta``): the reverse step alone, ``S``, ``S'`` and ``delta`` standing in for
  values read back; no recompute.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    r = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -r, r)


@triton.jit
def floor_fwd_kernel(out, T, N: tl.constexpr, TJ: tl.constexpr):
    pid = tl.program_id(0)
    o_i = tl.arange(0, N)[:, None]
    o_j = tl.arange(0, TJ)[None, :]
    k = (o_i + 1.0 + pid % 7) / (N * 8.0)
    q = (N - o_i + 0.5) / (N * 8.0)
    v = (o_j + 1.0) / TJ
    S = tl.zeros([N, TJ], tl.float32)
    acc = tl.zeros([1, TJ], tl.float32)
    for t in range(T):
        alpha = 0.9 + 0.0001 * t
        r = tl.sum(S * k, axis=0, keep_dims=True)
        S = _tanh(alpha * S + k * (v - r))
        acc += tl.sum(S * q, axis=0, keep_dims=True)
    tl.store(out + pid * TJ + o_j, acc)


@triton.jit
def floor_bwd_kernel(out, T, N: tl.constexpr, TJ: tl.constexpr, CHUNK: tl.constexpr):
    pid = tl.program_id(0)
    o_i = tl.arange(0, N)[:, None]
    o_j = tl.arange(0, TJ)[None, :]
    k = (o_i + 1.0 + pid % 7) / (N * 8.0)
    q = (N - o_i + 0.5) / (N * 8.0)
    v = (o_j + 1.0) / TJ
    dy = (TJ - o_j + 0.5) / TJ
    dS = tl.zeros([N, TJ], tl.float32)
    acc_q = tl.zeros([N, 1], tl.float32)
    acc_k = tl.zeros([N, 1], tl.float32)
    for c in range(tl.cdiv(T, CHUNK)):
        S = tl.zeros([N, TJ], tl.float32) + 0.01 * c
        for _ in range(CHUNK):  # the segment recompute
            r = tl.sum(S * k, axis=0, keep_dims=True)
            S = _tanh(0.9 * S + k * (v - r))
        for _ in range(CHUNK):  # the reverse walk; scaling S stands in for reading it back
            S = S * 0.999
            delta = v - tl.sum(S * k, axis=0, keep_dims=True)
            Sn = _tanh(0.9 * S + k * delta)
            acc_q += tl.sum(Sn * dy, axis=1, keep_dims=True)
            dpre = (dS + q * dy) * (1.0 - Sn * Sn)
            dd = tl.sum(dpre * k, axis=0, keep_dims=True)
            acc_k += tl.sum(dpre * delta, axis=1, keep_dims=True)
            dS = 0.9 * dpre - k * dd
    tl.store(out + pid * N + o_i, acc_q + acc_k + tl.sum(dS, axis=1, keep_dims=True))


@triton.jit
def floor_bwd_kept_kernel(out, T, N: tl.constexpr, TJ: tl.constexpr):
    pid = tl.program_id(0)
    o_i = tl.arange(0, N)[:, None]
    o_j = tl.arange(0, TJ)[None, :]
    k = (o_i + 1.0 + pid % 7) / (N * 8.0)
    q = (N - o_i + 0.5) / (N * 8.0)
    dy = (TJ - o_j + 0.5) / TJ
    S = tl.zeros([N, TJ], tl.float32) + 0.01 * (pid % 3)
    delta = (o_j + 1.0) / TJ
    dS = tl.zeros([N, TJ], tl.float32)
    acc_q = tl.zeros([N, 1], tl.float32)
    acc_k = tl.zeros([N, 1], tl.float32)
    for _ in range(T):  # scaling S and delta stands in for reading them back
        Sn = S
        S = S * 0.999
        delta = delta * 0.999
        acc_q += tl.sum(Sn * dy, axis=1, keep_dims=True)
        dpre = (dS + q * dy) * (1.0 - Sn * Sn)
        dd = tl.sum(dpre * k, axis=0, keep_dims=True)
        acc_k += tl.sum(dpre * delta, axis=1, keep_dims=True)
        dS = 0.9 * dpre - k * dd
    tl.store(out + pid * N + o_i, acc_q + acc_k + tl.sum(dS, axis=1, keep_dims=True))


def measure(
    B: int, H: int, N: int, NV: int, tile: int, warps: int, T: int, chunk: int = 16, kept: bool = False
) -> tuple[float, float]:
    """(forward floor, backward floor) in ms at the kernel's grid (B * H * NV / tile programs) and
    warps; ``kept``: the backward of a loop whose forward kept every state (no recompute)."""
    import torch
    from triton.testing import do_bench

    programs = B * H * triton.cdiv(NV, tile)
    out = torch.empty(programs * max(N, tile), device="cuda")
    fwd = do_bench(lambda: floor_fwd_kernel[(programs,)](out, T, N=N, TJ=tile, num_warps=warps), rep=50)
    if kept:
        bwd = do_bench(
            lambda: floor_bwd_kept_kernel[(programs,)](out, T, N=N, TJ=tile, num_warps=warps), rep=50
        )
    else:
        bwd = do_bench(
            lambda: floor_bwd_kernel[(programs,)](out, T, N=N, TJ=tile, CHUNK=chunk, num_warps=warps), rep=50
        )
    return fwd, bwd
