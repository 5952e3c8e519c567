"""What runs around the chunked op, counted: the aten ops one forward+backward of a chunked layer
dispatches (on the CPU under the Triton interpreter, bf16 autocast as the GPU benchmark runs it; the
count of ops does not depend on the device), and the short convolutions' fused bias and silu."""

from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer

ROOT = Path(__file__).resolve().parent.parent

#: ops that launch no kernel: views, and allocations without a fill
FREE = {
    "view", "_unsafe_view", "expand", "permute", "t", "transpose", "slice", "select", "unsqueeze",
    "squeeze", "as_strided", "alias", "detach", "split", "split_with_sizes", "unbind", "empty",
    "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh",
}  # fmt: skip


class _Count(TorchDispatchMode):
    """The ops dispatched under it that are not in FREE (a custom op counts once: its body runs below
    the mode)."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ not in FREE:
            self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_fwd_bwd(spec: str, sets: dict) -> Counter:
    layer = instantiate(parse_file(ROOT / "specs" / f"{spec}.rnn"), None, sets).layer
    m = RecurrentLayer(layer, backend="triton", seed=0, chunk=16, strategy="chunked")
    x = torch.randn(2, 24, layer.dim, requires_grad=True)  # more tokens than gdn's stacked projections' rows
    params = [p for p in m.parameters() if p.requires_grad]

    def once():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, _ = m(x)
        torch.autograd.grad(y, [x, *params], torch.ones_like(y))

    once()  # the first call compiles and runs parameter-only set-up once
    with _Count() as c:
        once()
    return c.ops


CASES = {
    "gdn": ({"dim": 16, "heads": 2, "n": 4}, 37),
    "mamba2": ({"dim": 8, "headdim": 4, "dstate": 4}, 35),
}


@pytest.mark.parametrize("spec", sorted(CASES))
def test_ops_around_the_chunked_op(spec, monkeypatch):
    """At most N ops per forward+backward, N as reached when this test was written (GDN 37 since its
    two projections of x run as one GEMM, 39 before; Mamba2 35; 45 and 39 while the generated
    kernels read sliced per-token inputs from contiguous copies, 89 and 107 before, 85 and 103 of
    them on a GPU, where autocast's check of the device did not cast the readout to fp32 and back).
    What remains: autocast's casts of the weights and of x (and of the weights' gradients), the
    GEMMs, the parameter-only values, the bf16 cast of the output, the initial and final states'
    zeros and permutations, the sums of gradients of inputs the chunked op broadcasts over heads;
    and the custom ops: one per short convolution (bias and silu included), the coefficients, the
    chunked recurrence and the epilogue (``g ⊙ o + p`` and the readout), forward and backward. Each
    of those is one kernel where PyTorch would launch several: no casts of the projections to fp32,
    no silu or sigmoid, no elementwise op after the chunked op, and the projection's outputs split
    (their gradients one concatenation, not a zero-filled scatter each). Counted with the
    recomputation of cheap per-token values off (archdsl/recompute.py): with it on, the backward
    also reruns the short convolutions and the per-token kernel, by design."""
    monkeypatch.setenv("ARCHDSL_RECOMPUTE", "0")
    sets, most = CASES[spec]
    ops = count_fwd_bwd(spec, sets)
    custom = [k for k in ops if k.startswith(("token_", "readout_", "chunked_"))]
    assert len(custom) == 6, custom  # both generated parts and the chunked op, forward and backward
    assert ops["shortconv_" + ("11" if spec == "mamba2" else "01")] == 3
    assert not {"sigmoid", "silu", "convolution", "constant_pad_nd", "slice_backward"} & set(ops)
    assert ops["clone"] <= (2 if spec == "mamba2" else 0)  # the state's permutations; no input copied
    assert sum(ops.values()) <= most, sorted(ops.items())


def test_convolutions_fuse_bias_and_silu():
    """Mamba2's ``silu(conv(x, w) + b)`` runs as one conv1d with a bias and torch's silu; GDN's
    ``silu(conv(q, w))`` without a bias."""
    for spec, biased in (("mamba2", True), ("gdn", False)):
        ir = instantiate(parse_file(ROOT / "specs" / f"{spec}.rnn"), "test", {}).layer
        convs = [c for v in ir.sequence for c in RecurrentLayer(ir, seed=0)._convs[v]]
        assert len(convs) == 3
        assert all((c.bias is not None) == biased and c.silu is not None for c in convs)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("silu", [True, False], ids=["silu", "linear"])
@pytest.mark.parametrize("T", [1, 3, 37])
def test_short_conv_kernel_matches_conv1d(bias, silu, T):
    """The kernels against torch's conv1d on the same fp32 values, forward and every gradient: x a
    strided bf16 slice (as a projection's output), T shorter than the window and longer than a block
    of tokens (16 forward, 32 backward), channels past one block (128 forward, 32 backward)."""
    from archdsl.codegen.run.shortconv import short_conv

    g = torch.Generator().manual_seed(T)
    N, C, K = 2, 140, 4
    wide = torch.randn(N, T, 2 * C, generator=g).bfloat16().requires_grad_(True)
    w = torch.randn(C, K, generator=g, requires_grad=True)
    b = torch.randn(C, generator=g, requires_grad=True) if bias else None
    x = wide[..., C:]
    got = short_conv(x, w, b, silu)
    pad = torch.nn.functional.pad(x.float().transpose(1, 2), (K - 1, 0))
    want = torch.nn.functional.conv1d(pad, w[:, None], b, groups=C).transpose(1, 2)
    want = torch.nn.functional.silu(want) if silu else want
    assert got.dtype == torch.float32 and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    dy = torch.randn(got.shape, generator=g)
    leaves = [wide, w, *([b] if bias else [])]
    for a, e in zip(torch.autograd.grad(got, leaves, dy), torch.autograd.grad(want, leaves, dy)):
        assert a.dtype == e.dtype
        tol = 2e-2 if a.dtype == torch.bfloat16 else 1e-5  # dx rounded to bf16 from two fp32 sums
        torch.testing.assert_close(a.float(), e.float(), rtol=tol, atol=tol)


def _conv_grads(x, w, b, silu, dy, leaves):
    """The gradients of ``silu(conv(x, w) + b)`` by conv1d in float64 (``dy`` the output's)."""
    K = w.shape[1]
    pad = torch.nn.functional.pad(x.double().transpose(1, 2), (K - 1, 0))
    y = torch.nn.functional.conv1d(
        pad, w.double()[:, None], None if b is None else b.double(), groups=w.shape[0]
    )
    y = y.transpose(1, 2)
    return torch.autograd.grad(torch.nn.functional.silu(y) if silu else y, leaves, dy.double())


#: (tokens, window, channels, bias, silu, tokens a block, channels a block, tokens a program)
WALKS = [
    (1, 4, 70, True, True, 16, 64, 128),  # one token: only the halo past the end, all of it past T
    (3, 4, 5, False, True, 16, 32, 128),  # fewer tokens than the window
    (37, 4, 70, True, True, 16, 64, 128),  # a partial last block; channels past one block
    (37, 4, 70, False, False, 16, 32, 32),  # two full segments and a partial one, no silu
    (37, 3, 33, True, True, 16, 32, 40),  # window 3 (4 shifts padded), tokens a program rounded to 32
    (70, 2, 70, True, False, 32, 64, 32),  # window 2, a segment a block: the halo computed each time
    (70, 4, 9, False, True, 32, 32, 64),
    (5, 1, 6, True, True, 16, 32, 128),  # window 1: nothing carried
]


@pytest.mark.parametrize("T,K,C,bias,silu,bt,bc,seg", WALKS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_short_conv_walk_backward(T, K, C, bias, silu, bt, bc, seg, dtype, monkeypatch):
    """The walking backward (``shortconv.BACKWARD["kernel"] = "walk"``) against conv1d's gradients in
    float64 at awkward shapes, x a strided slice of a wider tensor and dy a strided view: dw and db
    to fp32 rounding, dx to its type's; and against the halo kernel it replaces on the same call."""
    from archdsl.codegen.run import shortconv

    g = torch.Generator().manual_seed(T * 10 + K)
    wide = torch.randn(2, T, 3 * C, generator=g).to(dtype).requires_grad_(True)
    x = wide[..., C : 2 * C]
    w = torch.randn(C, K, generator=g, requires_grad=True)
    b = torch.randn(C, generator=g, requires_grad=True) if bias else None
    leaves = [wide, w, *([b] if bias else [])]
    dy = torch.randn(2, C, T, generator=g).transpose(1, 2)  # not contiguous
    want = _conv_grads(x, w, b, silu, dy, leaves)
    got = {}
    for kernel in ("walk", "halo"):
        for key, v in dict(kernel=kernel, bt=bt, bc=bc, seg=seg, warps=4).items():
            monkeypatch.setitem(shortconv.BACKWARD, key, v)
        got[kernel] = torch.autograd.grad(shortconv.short_conv(x, w, b, silu), leaves, dy)
    for grads in got.values():
        assert grads[0].dtype == dtype and all(a.dtype == torch.float32 for a in grads[1:])
        for a, e in zip(grads, want):
            tol = 1e-2 if a.dtype == torch.bfloat16 else 2e-5
            scale = max(e.abs().max().item(), 1.0)
            torch.testing.assert_close(a.double(), e.double(), rtol=tol, atol=tol * scale)
    for a, e in zip(got["walk"], got["halo"]):
        torch.testing.assert_close(a.float(), e.float(), rtol=1e-2, atol=1e-2)


def test_short_conv_is_one_graph_under_torch_compile():
    """The kernels are a custom op with fake shapes: ``torch.compile(fullgraph=True)`` traces the call
    and its backward, and gives the eager values."""
    from archdsl.codegen.run.shortconv import short_conv

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, generator=g).bfloat16().requires_grad_(True)
    w = torch.randn(6, 4, generator=g, requires_grad=True)
    b = torch.randn(6, generator=g, requires_grad=True)
    f = torch.compile(lambda x, w, b: short_conv(x, w, b, True), fullgraph=True, backend="aot_eager")
    got, want = f(x, w, b), short_conv(x, w, b, True)
    assert torch.equal(got, want)
    dy = torch.randn(got.shape, generator=g)
    for a, e in zip(torch.autograd.grad(got, [x, w, b], dy), torch.autograd.grad(want, [x, w, b], dy)):
        assert torch.equal(a, e)


def test_per_token_kernels_read_sliced_inputs_where_they_lie(monkeypatch):
    """The generated per-token kernels read an input at its batch and token strides (``token_strided``:
    GDN's gate ``g``, a slice of the projection's output, is not copied): the layer's output and every
    gradient equal, to the bit, those from contiguous copies of every input, at B 2 and T 19 (a token
    stride of the projection's width, a batch stride of T of them)."""
    from archdsl.codegen.run import runtime

    layer = instantiate(parse_file(ROOT / "specs" / "gdn.rnn"), "test", {}).layer
    m = RecurrentLayer(layer, backend="triton", seed=0, chunk=16, strategy="chunked")
    x = torch.randn(2, 19, layer.dim, generator=torch.Generator().manual_seed(0), requires_grad=True)
    params = [p for p in m.parameters() if p.requires_grad]

    def run():
        y, _ = m(x)
        return [y, *torch.autograd.grad((y * y).sum(), [x, *params])]

    seen = []
    real = runtime.token_strided
    monkeypatch.setattr(runtime, "token_strided", lambda t: seen.append(real(t) is t) or real(t))
    strided = run()
    assert any(seen)  # some input read in place
    monkeypatch.setattr(runtime, "token_strided", lambda t: t.contiguous())
    for a, b in zip(strided, run(), strict=True):
        assert torch.equal(a, b)


def test_token_strided_copies_only_what_is_not_compact_in_a_token():
    from archdsl.codegen.run.runtime import token_strided

    wide = torch.randn(2, 5, 24)
    q = wide[..., 8:20].view(2, 5, 3, 4)  # a projection's slice: tokens 24 apart
    assert token_strided(q) is q
    swapped = q.transpose(2, 3)  # not row-major within a token
    assert token_strided(swapped) is not swapped and token_strided(swapped).is_contiguous()
    one = wide[..., :1].unsqueeze(-1)  # size-1 axes: any stride
    assert token_strided(one) is one
