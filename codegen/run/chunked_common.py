"""What the chunked kernels share: the decay helpers every kernel of the forward and the backward
inlines, and the launch settings (``LAUNCH``, the blocks and warps a shape gets).

The kernels themselves: the forward in ``codegen/run/chunked_kernels.py``, the backward in
``codegen/run/chunked_backward.py``; the algebra in ``codegen/run/chunked_torch.py``.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl


def interpreted() -> bool:
    """Does Triton run on the CPU (``TRITON_INTERPRET=1``)?"""
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


#: launch settings: the largest block of value columns per program; the largest block of the key axis
#: of the backward's per-token kernels (None: 32 for a delta rule, whose key-block program holds four
#: [C, K] and four [C, C] accumulators, else 64; the walks over the chunks hold the key axis whole);
#: warps per program; software-pipelining stages of the two kernels that walk the chunks (each stage
#: holds a chunk's [C, K] tiles in shared memory). Measured on an H100 at GDN_100m and Mamba2_100m
#: head shapes (benchmarks/results/chunked-2/): 4 warps beat 8 in every setting, and a key block of
#: 64 in the delta rule's per-token kernel spills (32.6 ms against 4.9 ms at 32).
LAUNCH = {"bv": 64, "bk": None, "warps": 4, "stages": 1}


def key_block(K: int, lowrank: bool) -> int:
    """The key axis' block in the backward's per-token kernels (at least 16: ``tl.dot``'s minimum)."""
    return min(LAUNCH["bk"] or (32 if lowrank else 64), max(16, triton.next_power_of_2(K)))


def blocks(K: int, V: int) -> tuple[int, int]:
    """The key axis whole (padded to a power of two, at least 16: ``tl.dot``'s minimum), the value
    axis in blocks of at most ``LAUNCH["bv"]``."""
    return max(16, triton.next_power_of_2(K)), min(LAUNCH["bv"], max(16, triton.next_power_of_2(V)))


def _meta(lw, q, v, ab, chunk: int, precise: bool) -> dict:
    assert chunk >= 16 and chunk & (chunk - 1) == 0, "the chunk must be a power of two, at least 16"
    BK, BV = blocks(q.shape[-1], v.shape[-1])
    return dict(
        C=chunk, BK=BK, BV=BV, SCALAR=lw.dim() == 3, PREC="ieee" if precise else "tf32",
        num_warps=LAUNCH["warps"],
    )  # fmt: skip
