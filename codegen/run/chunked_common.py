"""What the chunked kernels share: the decay helpers every kernel of the forward and the backward
inlines, and the launch settings (``LAUNCH``, the blocks and warps a shape gets).

The kernels themselves: the forward in ``codegen/run/chunked_kernels.py``, the backward in
``codegen/run/chunked_backward.py``; the algebra in ``codegen/run/chunked_torch.py``.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


def interpreted() -> bool:
    """Does Triton run on the CPU (``TRITON_INTERPRET=1``)?"""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _tf32(x):
    """x's fp32 value with its mantissa cut to TF32's 10 bits (truncated): what a tensor core reads of
    an fp32 operand, for the interpreter ("tf32-emulated")."""
    return (x.to(tl.float32).to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)


@triton.jit
def _dot(x, y, DOT: tl.constexpr):
    """x @ y on tensor cores with fp32 accumulation: ``DOT`` "ieee" (exact fp32 products), "tf32", or
    "bf16"/"fp16" (the operands rounded to that type first: twice TF32's rate). Under the interpreter,
    which multiplies exactly whatever it is asked, "bf16-emulated" rounds the operands first as a GPU
    would, and "tf32-emulated" (``LAUNCH["tf32_emulated"]``) cuts them to TF32 (``_meta``)."""
    # one return after a constexpr if/else: Triton 3.6 compiles the statements after an early return
    if DOT == "bf16":
        out = tl.dot(x.to(tl.bfloat16), y.to(tl.bfloat16))
    elif DOT == "bf16-emulated":  # the interpreter multiplies bf16 arrays as integers: round, then fp32
        out = tl.dot(
            x.to(tl.bfloat16).to(tl.float32), y.to(tl.bfloat16).to(tl.float32), input_precision="ieee"
        )
    elif DOT == "tf32-emulated":
        out = tl.dot(_tf32(x), _tf32(y), input_precision="ieee")
    elif DOT == "fp16":
        out = tl.dot(x.to(tl.float16), y.to(tl.float16))
    else:
        out = tl.dot(x, y, input_precision=DOT)
    return out


@triton.jit
def _split_dot(x, y, DOT: tl.constexpr):
    """``_dot`` with ``x`` as two terms of the 16-bit type, hi + lo: x rounded to about 2⁻¹⁸ of its
    size in bf16 (2⁻²⁴ in fp16), not 2⁻⁹ (2⁻¹²), for twice the tensor-core work. For scores summed
    after the op over heads whose outputs cancel (``LinearForm.split_scores``); fp32 products (ieee,
    tf32) as ``_dot``'s."""
    if DOT == "fp16":
        hi = x.to(tl.float16).to(tl.float32)
        out = _dot(hi, y, DOT) + _dot(x - hi, y, DOT)
    elif DOT == "bf16" or DOT == "bf16-emulated":
        hi = x.to(tl.bfloat16).to(tl.float32)
        out = _dot(hi, y, DOT) + _dot(x - hi, y, DOT)
    else:
        out = _dot(x, y, DOT)
    return out


@triton.jit
def _wide_dot(x, y, DOT: tl.constexpr):
    """``_dot`` for operands that may leave fp16's range (decays divided out, up to exp(80)) or whose
    products are summed into a decay's gradient: TF32 in place of fp16, bf16 otherwise as asked."""
    if DOT == "fp16":
        out = tl.dot(x, y, input_precision="tf32")
    else:
        out = _dot(x, y, DOT)
    return out


@triton.jit
def _tile(x, s0, s1, s2, s3, i_b, i_h, t, r, mt, mr):
    """The [len(t), len(r)] tile of ``x`` [B, T, H, R] (strides ``s0…s3``, any float type) at batch
    element ``i_b``, head ``i_h``, steps ``t`` and columns ``r``, as fp32 (0 outside the masks)."""
    p = x + i_b * s0 + i_h * s2 + t[:, None] * s1 + r[None, :] * s3
    return tl.load(p, mask=mt[:, None] & mr[None, :], other=0.0).to(tl.float32)


@triton.jit
def _head_row(x, s0, s1, s2, i_b, i_h, t, mt):
    """The values of ``x`` [B, T, H] (one a head and step) at batch element ``i_b``, head ``i_h`` and
    steps ``t``, as fp32 (0 outside ``mt``)."""
    return tl.load(x + i_b * s0 + i_h * s2 + t * s1, mask=mt, other=0.0).to(tl.float32)


@triton.jit
def _decayed(x, y, gx, gy, mask, SCALAR: tl.constexpr, DOT: tl.constexpr):
    """M[t, τ] = Σ_i x_t[i] y_τ[i] exp(gx_t[i] - gy_τ[i]) where ``mask``, else 0."""
    if SCALAR:
        m = _dot(x, tl.trans(y), DOT)
        out = m * tl.exp(tl.where(mask, gx[:, None] - gy[None, :], float("-inf")))
    else:
        m = _wide_dot(x * tl.exp(gx), tl.trans(y * tl.exp(-gy)), DOT)
        out = tl.where(mask, m, 0.0)
    return out


@triton.jit
def _chunk_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk, SCALAR: tl.constexpr):
    """(g, G, Γ_C): the chunk's log-decays (fp32), their inclusive cumulative sum and the chunk's total."""
    if SCALAR:
        g = _head_row(lw, sw0, sw1, sw2, i_b, i_h, t, mt)
    else:
        g = _tile(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, rk, mt, mk)
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
def _rowsum(x, SCALAR: tl.constexpr):
    """A decay's gradient: summed over the key axis when the decay is one per head."""
    if SCALAR:
        out = tl.sum(x, 1)
    else:
        out = x
    return out


@triton.jit
def _masked(m, gx, gy, mask, SCALAR: tl.constexpr):
    """A summed ``_decayed_raw``: the head's decay ratio applied (``SCALAR``), 0 outside ``mask``."""
    if SCALAR:
        out = m * tl.exp(tl.where(mask, gx[:, None] - gy[None, :], float("-inf")))
    else:
        out = tl.where(mask, m, 0.0)
    return out


@triton.jit
def _head_decays(lw, sw0, sw1, sw2, sw3, i_b, i_h, t, mt, C: tl.constexpr, SCALAR: tl.constexpr):
    """(g, G) of a head-wide decay, [C] (zeros for a decay per key channel: each key block has its own)."""
    if SCALAR:
        g = _head_row(lw, sw0, sw1, sw2, i_b, i_h, t, mt)
    else:
        g = tl.zeros([C], dtype=tl.float32)
    return g, tl.cumsum(g, 0)


@triton.jit
def _decay_grad_scan(Z, rc, SHIFTED: tl.constexpr):
    """dg_s = Σ_{τ < s ≤ t} Z[t, τ] (``SHIFTED``: τ < s < t), the per-step log-decays' gradient of a
    decayed [C, C] matrix (Z: its gradient times it) summed over exactly its terms, with no product:
    L[t, j] = Σ_{τ ≤ j} Z[t, τ] (a scan along τ), h_j = Σ_{t > j} L[t, j] (t > j + 1), dg_s = h_{s-1}."""
    r, c = rc[:, None], rc[None, :]
    L = tl.cumsum(Z, 1)
    if SHIFTED:
        h = tl.sum(tl.where(r > c + 1, L, 0.0), 0)
    else:
        h = tl.sum(tl.where(r > c, L, 0.0), 0)
    return tl.sum(tl.where(c == r - 1, h[None, :], 0.0), 1)


#: launch settings: the largest block of value columns per program; the largest block of the key axis
#: of the backward's per-token kernels (None: 64; the delta rule's dq/dk: ``split_bk``; the walks:
#: ``walk_bk``. A delta rule's dv kernel took 32 while it summed three [C, C] matrices; with two, 64
#: measured 0.318 against 0.363 ms a GDN_100m call on an H200, benchmarks/results/round-16/);
#: warps per program. ``states_*`` and ``dstates_*``: the two kernels that walk the chunks in order
#: (the forward's ``chunk_states_kernel``, the backward's ``chunk_dstates_kernel``), each with its own
#: value block and warps (None: ``bv``, ``warps``) and software-pipelining stages (each stage holds a chunk's
#: [C, K] tiles in shared memory; ``walk_launch``). Their spills at each setting, compiled for sm_90 at
#: GDN_100m head shapes: benchmarks/results/walks-1/. On an H100 (chunked-7/, one call) 8 warps in either walk
#: or both, and dstates at a value block of 32, were slower. Earlier (chunked-2/): 4 warps beat 8 in every
#: setting. ``walk_bk``: the walks' block of key rows without a rank-one correction (GLA, Mamba2: the decay is
#: diagonal in the key axis, so blocks of rows evolve apart; a correction contracts the state over the key
#: axis, and its walks hold it whole; None or 0: whole). Compiled for sm_90 with Triton 3.9 at GLA_100m head
#: shapes (K 128, V 256, a decay per key channel, TF32; benchmarks/results/walks-2/), at a value block of 64,
#: 4 warps and one stage, spill stores a thread (states / dstates): 132 / 156 B whole, 16 / 132 at 64, none at
#: 32, every one at 217-255 registers, two programs (8 warps) an SM; at 8 warps and a block of 32 both
#: take 128 registers and spill nothing (16 warps an SM). On an H200 (benchmarks/results/chunked-8/,
#: GLA_100m forward+backward, one call): 2.51 ms whole, 2.43 at 64, 2.50 at 32. ``token_stages`` and
#: ``token_warps``: the backward's per-token kernels' own stages and warps (None: Triton's default
#: stages, ``warps``). Compiled for sm_90, their loops' three default stages take 160-230 KB of shared
#: memory (one program per SM) for loops of one or two value blocks (benchmarks/results/chunked-4/);
#: at one stage, on an H100 (benchmarks/results/chunked-5/, two runs of each, alternating), the GPU
#: time of three forward+backward fell from 27.7/28.0 to 27.5/27.4 ms (GDN_100m: dq/dk 2.65 -> 2.39,
#: dv 0.40 -> 0.52 ms) and from 17.4/17.6 to 16.4/16.6 ms (Mamba2_100m: dq/dk 0.68 -> 0.56, dv 0.44
#: -> 0.23 ms); 8 warps at one stage were slower for Mamba2 (17.3 ms). ``keep``: the forward keeps
#: every chunk's start state (a delta rule's U, W and T⁻¹, fp32; G, ``walk_cumsum``) for the backward,
#: which otherwise reruns the forward's kernels 1 and 2: the same gradients to the bit where both use the same
#: products (fp32 layers, delta rules; a 16-bit layer without a correction keeps states from 16-bit
#: products, the rerun's are TF32), for 288 MiB more held per GDN_100m layer at B 32, T 512, C 64
#: (112 MiB Mamba2_100m; docs/compiler.md, the chunked strategy's backward).
#: ``dqa_bv`` and ``dqa_warps``: the value block and warps of the delta rule's ``chunk_dqa_kernel``
#: (Q_aᵀ dO before the backward's walk; each program sums Q_a over the key axis, so a wide value block
#: sums it fewer times: 116 registers, no spills at 128 and 8 warps for sm_90; on an H200 with the
#: joint form, 0.113 ms a GDN_100m call at 8 warps, 0.099 at 4, benchmarks/results/round-17/).
#: ``prep_warps`` and ``output_warps``: the forward's ``chunk_prep_kernel`` and
#: ``chunk_output_kernel``'s own warps (None: ``warps``); ``output_bv``, ``dv_bv`` and ``dv_warps``:
#: the output kernel's and ``chunk_dv_kernel``'s own value block and warps (``kernel_launch``), for a
#: form without a rank-one correction (with one, the common block). Each value block recomputes the
#: chunk's scores over the whole key axis: on an H200 (round-19, GLA_100m, V 256, ms a call) output
#: 0.155 at 64, 0.089 at 128, 0.082 at 256; dv 0.245 at 64, 0.225 at 128, 0.32 at 256, 0.366 at 8
#: warps. GDN_100m's output (a correction): 0.19 at 64, 0.25 at 128.
#: ``joint``: a delta rule whose correction shares the write's key (``LinearForm.joint``) runs the
#: kernels' joint form (one rank-one term); off, the general form with a = k, the same coefficients
#: (for A/B comparisons). ``tf32_emulated``:
#: under the interpreter, "tf32" products with their operands cut to TF32's 10 mantissa bits
#: (``_tf32``) as a GPU's tensor cores read them, not exact fp32: off by default, because with it
#: gdn's bf16 ``A_log`` gradient in the kernel harness (T 33, chunks of 16) is 4.1e-2 off the
#: reference (round 16's kernels 5.1e-2, the general kernels on the joint coefficients 3.2e-2)
#: against the 2e-2 bound; a delta rule's decay gradient's precision is open (round-17/).
#: ``split_bk``, ``split_warps`` and ``split_stages``: the key block, warps and software-pipelining
#: stages (None: ``token_stages``) of the delta rule's dq/dk kernels (chunked_dqk.py; their spills,
#: compiled for sm_90: round-16/). On an H200 (round-16) the dq/dk kernel took 0.81 ms a GDN_100m call
#: at a key block of 64 and 1.29 at 32. With the joint form
#: (GatedDeltaNet's: no write tiles, two matrices; benchmarks/results/round-17/, H200, ms a GDN_100m
#: call of dq/dk and the matrices' kernel): 0.567 and 0.224 at 8 warps and one stage; 0.437 and 0.167
#: at 4 warps; 0.429 and 0.129 at 4 warps and two stages (today's); at 8 warps two stages took dq/dk
#: to 0.602; at 4 warps a key block of 128 0.701, of 32 0.514. ``dg_scan``: in ``chunk_dqk_kernel``
#: (no correction), a head's decay gradient of the decayed [C, C] matrix by a scan (``_decay_grad_scan``, 1)
#: or by a product with a 0/1 matrix (0); the delta rule's kernels always scan. ``o_half``: the op's output
#: ``o`` in a bf16/fp16 layer's own type (its gradient read in that type), not fp32, where the decay is one
#: per key channel (``o_dtype``). ``store_half``: the big intermediates one kernel writes and others read
#: stored in a bf16/fp16 layer's own type, not fp32 (``store_dtype``): the states' gradients, a delta
#: rule's dR and its four matrices' gradients (``dmat``), and without a rank-one correction the
#: chunks' start states; a delta rule's start states, U₀, U and W stay fp32 (``forward_store``). What
#: is carried or summed stays fp32: the walks' running state, every product's accumulator, T⁻¹.
#: ``narrow``: a bf16/fp16 layer's epilogue writes ``y`` in the layer's type, and its coefficient
#: kernel a form's coefficients but the log-decays where the form has no rank-one correction
#: (``chunked._narrow``); off, all fp32. On an H200 (benchmarks/results/round-18/, alternating with
#: the build before): Mamba2_100m 4.65 -> 4.46 ms GPU time a forward+backward, GDN_100m 3.97 -> 3.94.
#: ``walk_cumsum``: the walks read the chunk-local cumulative log-decays from one parallel launch
#: before them (``chunked_kernels.walk_decays``) where they would scan each chunk's inside their
#: sequential loop (GLA_100m's walks, sm_90: 33 → 16 KB shared memory, 24 → 0 B spilled a thread).
#: ``parallel_cumsum``: with a decay per key channel the output, dv and dq/dk kernels read them too
#: (H200, round-20, GLA_100m: 2.138 -> 2.100 ms a forward+backward; dq/dk 0.413 -> 0.390, dv 0.223 -> 0.207).
#: ``tie``: a joint correction whose read vector is the key times one value a token (``LinearForm.tie``:
#: GatedDeltaNet's b = -αβ k̂) reaches the kernels as that value, [B, T, H] (off: b whole, [B, T, H, K]).
LAUNCH = {
    "bv": 64,
    "bk": None,
    "warps": 4,
    "states_bv": None,
    "states_warps": None,
    "states_stages": 1,
    "dstates_bv": None,
    "dstates_warps": None,
    "dstates_stages": 1,
    "walk_bk": 64,
    "token_stages": 1,
    "token_warps": None,
    "keep": True,
    "split_bk": 64,
    "split_warps": 4,
    "split_stages": 2,
    "dqa_bv": 128,
    "dqa_warps": 4,
    "prep_warps": None,
    "output_warps": None,
    "output_bv": 128,
    "dv_warps": None,
    "dv_bv": 128,
    "joint": True,
    "tf32_emulated": False,
    "dg_scan": 0,
    "o_half": True,
    "store_half": True,
    "narrow": True,
    "walk_cumsum": True,
    "parallel_cumsum": True,
    "tie": True,
}


def o_dtype(dtype: torch.dtype, head_decay: bool, half: bool = False) -> torch.dtype:
    """The chunked op's output type for a layer of ``dtype`` whose decay is one per head
    (``head_decay``) or one per key channel: with ``LAUNCH["o_half"]``, a bf16/fp16 layer's own type
    where the decay is per key channel (half the bytes the readout reads and its backward writes;
    ``o`` summed in fp32 and rounded once) or everywhere with ``half`` (``products``), else fp32. A
    head-wide decay's gradient sums ``do``'s products over the head's whole state, where rounding
    ``do`` to 16 bits does not average out: on an H200, Mamba2's ``dt_bias`` gradient measured 1.7e-2
    and 2.3e-2 off the reference with a bf16 ``o`` (chunks of 64 and 16; 6.3e-3 with fp32), against
    GLA's worst 4.7e-3 (benchmarks/results/chunked-8/)."""
    narrow = half or (LAUNCH["o_half"] and not head_decay)
    return dtype if narrow and dtype in (torch.bfloat16, torch.float16) else torch.float32


def store_dtype(dtype: torch.dtype) -> torch.dtype:
    """The type the chunked kernels store their big intermediates in for a layer of ``dtype``
    (``LAUNCH["store_half"]``): a bf16/fp16 layer's own, else fp32. Each is rounded once where it is
    stored and widened to fp32 where it is read. The backward's (the states' gradients, a delta rule's
    dR and ``dmat``) take it; the forward's take ``forward_store``'s."""
    half = LAUNCH["store_half"] and dtype in (torch.bfloat16, torch.float16)
    return dtype if half else torch.float32


def forward_store(store: torch.dtype, lowrank: bool, half: bool = False) -> torch.dtype:
    """The type of the forward's stored intermediates (the chunks' start states; a delta rule's U₀, U,
    W) given ``store_dtype``'s: the same without a rank-one correction or with ``half``
    (``products``), fp32 with one. A delta rule's
    walk reads W and U₀ back into the state it carries, and its decay gradients sum products with S and
    U that cancel: on the kernel harness' bf16 gdn (T 33, chunks of 16, the interpreter rounding to
    nearest as a GPU does) these four in bf16 put ``A_log``'s gradient 6.0e-2 off the reference (W
    alone 3.0e-2, S 1.4e-2, U 1.2e-2, U₀ 1.2e-2) and E88 identity's 1.7e-2, against 4.5e-3 and
    8.6e-3 with only the backward's in bf16 (benchmarks/results/store-half/)."""
    return torch.float32 if lowrank and not half else store


def walk_launch(walk: str, meta: dict, V: int, K: int | None = None) -> dict:
    """``_meta``'s launch options for a walk over the chunks (``walk``: "states", the forward's
    ``chunk_states_kernel``, or "dstates", the backward's ``chunk_dstates_kernel``) with its own value
    block, warps and stages from ``LAUNCH`` (a value block or warps of None: the common one). ``K``:
    the key size of a walk without a rank-one correction, whose key rows evolve apart: a block of
    ``LAUNCH["walk_bk"]`` of them a program (a power of two, at least 16, at most the padded K; no
    ``K``, or a ``walk_bk`` of None or 0: the key axis whole, ``meta``'s block, as a correction
    needs)."""
    bk = LAUNCH["walk_bk"]
    out = kernel_launch(walk, dict(meta, num_stages=LAUNCH[f"{walk}_stages"]), V)
    if K and bk:
        out["BK"] = min(max(16, triton.next_power_of_2(bk)), max(16, triton.next_power_of_2(K)))
    return out


def kernel_launch(kernel: str, launch: dict, V: int) -> dict:
    """``launch`` with one kernel's own value block and warps where ``LAUNCH`` sets them
    (``{kernel}_bv``, at most the padded V; ``{kernel}_warps``): "states", "dstates", "dqa", "dv",
    "output"."""
    out = dict(launch)
    bv, warps = LAUNCH.get(f"{kernel}_bv"), LAUNCH.get(f"{kernel}_warps")
    if bv:
        out["BV"] = min(bv, max(16, triton.next_power_of_2(V)))
    if warps:
        out["num_warps"] = warps
    return out


def walk_grid(BH: int, K: int, V: int, walk: dict) -> tuple[int, int, int]:
    """A walk's programs (``walk``: ``walk_launch``'s options): batch × head, value blocks, key blocks
    (one where the key axis is whole)."""
    return BH, triton.cdiv(V, walk["BV"]), triton.cdiv(K, walk["BK"])


def token_launch() -> dict:
    """The backward's per-token kernels' launch options beyond ``_meta``'s (``LAUNCH``)."""
    out = {"num_stages": LAUNCH["token_stages"], "num_warps": LAUNCH["token_warps"]}
    return {k: v for k, v in out.items() if v is not None}


def key_block(K: int, split: bool = False) -> int:
    """The key axis' block in the backward's per-token kernels (at least 16: ``tl.dot``'s minimum);
    ``split``: chunked_dqk.py's kernels, which hold no [C, C] accumulator (``LAUNCH["split_bk"]``)."""
    bk = LAUNCH["split_bk"] if split else 64
    return min(LAUNCH["bk"] or bk, max(16, triton.next_power_of_2(K)))


def blocks(K: int, V: int) -> tuple[int, int]:
    """The key axis whole (padded to a power of two, at least 16: ``tl.dot``'s minimum), the value
    axis in blocks of at most ``LAUNCH["bv"]``."""
    return max(16, triton.next_power_of_2(K)), min(LAUNCH["bv"], max(16, triton.next_power_of_2(V)))


#: the products' types (``_dot``'s ``DOT``) by the layer's data type: exact fp32 for fp32 and fp64
#: layers; operands of the data's own 16-bit type for bf16/fp16 layers (fp32 accumulation; decays, the
#: triangular inverse and the state between chunks stay fp32)
DOTS = {torch.float32: "ieee", torch.float64: "ieee", torch.bfloat16: "bf16", torch.float16: "fp16"}


def products(dtype: torch.dtype, lowrank: bool, half: bool = False) -> str:
    """The forward's products' type for a layer of ``dtype``: ``DOTS``, except TF32 in place of 16-bit
    operands for a delta rule (``lowrank``) unless ``half`` (``products="half"``: every product in the
    16-bit type, as fla's and mamba_ssm's). On the kernel harness' bf16 layers (key axis 3), bf16
    operands put gdn's decay gradients 4e-2 to 1e-1 off the reference and e88's 2e-2 (the triangular
    solve and the decay gradients' sums amplify rounding), mamba2's and GLA's outputs within 1.4e-2;
    at GDN_100m's key axis of 128, gdn within 1e-2 of the fp32 reference (benchmarks/results/round-21/)."""
    dot = DOTS[dtype]
    return "tf32" if lowrank and dot in ("bf16", "fp16") and not half else dot


def backward_products(dot: str, half: bool = False) -> str:
    """The backward's products' type: TF32 in place of 16-bit operands unless ``half``. With bf16
    products Mamba2's ``dt_bias`` gradient measured 2.3e-2 to 2.8e-2 off the reference on an H100 (T
    130, chunks of 16 and 64), against 6.4e-3 with TF32: the decay gradients sum products that cancel."""
    return "tf32" if dot in ("bf16", "fp16") and not half else dot


def strides(x: torch.Tensor) -> tuple[int, ...]:
    """A coefficient's strides as the kernels read them, [B, T, H, R] (a head-wide decay: R stride 0);
    a stride may be 0 (one value broadcast along that axis). The kernels take them as four scalar
    arguments each, not as a tuple: Triton specialises scalar integers (equal to 1, multiples of 16),
    which lets it vectorise the loads; as tuple elements the per-token backward kernels measured 30–45%
    slower (benchmarks/results/chunked-3)."""
    s = tuple(x.stride())
    return s if x.dim() == 4 else (*s, 0)


def tied(ab) -> bool:
    """Is the correction tied (``correction``: one σ a token, b = σ k)?"""
    return len(ab) == 1 and ab[0].dim() == 3


def correction(q, k, ab) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(a, b, joint) of the coefficients' rank-one correction ``ab``: [a, b]; [b] where it shares the
    write's key (``LinearForm.joint``: a is k; b [B, T, H]: tied, ``LinearForm.tie``, the read vector
    b k); [] without one (a and b then stand in as ``q``, never read)."""
    if len(ab) == 1:
        return k, ab[0], True
    a, b = ab if ab else (q, q)
    return a, b, False


def _meta(lw, q, k, v, ab, chunk: int, dot: str) -> dict:
    assert chunk >= 16 and chunk & (chunk - 1) == 0, "the chunk must be a power of two, at least 16"
    assert dot in ("ieee", "tf32", "bf16", "fp16"), dot
    if interpreted():  # the interpreter's products are exact: round the operands as a GPU would
        dot = "bf16-emulated" if dot == "bf16" else dot
        dot = "tf32-emulated" if dot == "tf32" and LAUNCH["tf32_emulated"] else dot
    BK, BV = blocks(q.shape[-1], v.shape[-1])
    # q, k (a, b) in one layout (as one generated kernel writes them): one offset computation for all,
    # not one per tensor (the delta rule's dq/dk kernel spills otherwise: 3.6 ms against 2.6 ms)
    shared = all(strides(x) == strides(q) for x in (k, *ab) if x.dim() == 4)  # a tied b: its own
    return dict(
        C=chunk, BK=BK, BV=BV, SCALAR=lw.dim() == 3, DOT=dot, SHARED=shared, num_warps=LAUNCH["warps"]
    )
