"""The chunked op's output type (``LAUNCH["o_half"]``, ``chunked_common.o_dtype``): a bf16/fp16 layer's
``o`` in its own type, summed in fp32 and rounded once; its gradient read as it comes, no copy; fp32
layers unchanged."""

import pytest
import torch
from archdsl.codegen.run import chunked_common
from archdsl.codegen.run.chunked_backward import chunked_backward
from archdsl.codegen.run.chunked_kernels import chunked_forward
from kernel_harness import compare_backends
from test_chunked import layer_of, random_problem


@pytest.mark.parametrize("lowrank", [False, True], ids=["write", "delta"])
def test_half_o_is_the_fp32_o_rounded_and_half_do_reads_exactly(lowrank):
    """o in bf16 is the fp32 o rounded once (to the bit; the interpreter's conversion truncates, a
    GPU's rounds to nearest); a bf16 ``do`` gives the gradients of the same values in fp32 (to the bit:
    the kernels widen it where they read it)."""
    lw, q, k, v, ab, h0 = random_problem(True, lowrank, torch.float32, K=18)
    o32, s32 = chunked_forward(lw, q, k, v, ab, h0, 16, "ieee")
    o16, s16 = chunked_forward(lw, q, k, v, ab, h0, 16, "ieee", torch.bfloat16)
    rounded = (
        o32.bfloat16() if o32.is_cuda else (o32.view(torch.int32) & -65536).view(torch.float32).bfloat16()
    )
    assert o16.dtype == torch.bfloat16 and torch.equal(o16, rounded) and torch.equal(s16, s32)
    do, dht = torch.randn_like(o32).bfloat16(), torch.randn_like(s32)
    got = chunked_backward(lw, q, k, v, ab, h0, do, dht, 16, "ieee")
    want = chunked_backward(lw, q, k, v, ab, h0, do.float(), dht, 16, "ieee")
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_o_dtype_follows_the_switch_and_the_decay(monkeypatch):
    """16-bit o for a 16-bit layer whose decay is per key channel, with the switch on; fp32 otherwise
    (a head-wide decay's gradient sums do's products over the whole head)."""
    monkeypatch.setitem(chunked_common.LAUNCH, "o_half", True)
    types = [torch.bfloat16, torch.float16, torch.float32, torch.float64]
    assert [chunked_common.o_dtype(t, False) for t in types] == [*types[:2], torch.float32, torch.float32]
    assert {chunked_common.o_dtype(t, True) for t in types} == {torch.float32}
    monkeypatch.setitem(chunked_common.LAUNCH, "o_half", False)
    assert {chunked_common.o_dtype(t, head) for t in types for head in (True, False)} == {torch.float32}


@pytest.mark.parametrize(
    "name, half, want",
    [("gla", True, torch.bfloat16), ("gla", False, torch.float32), ("mamba2", True, torch.float32)],
    ids=["key-decay-o-half", "key-decay-o-fp32", "head-decay-o-fp32"],
)
def test_layer_o_type_and_its_gradient(name, half, want, monkeypatch):
    """A bf16 layer within the harness' tolerance with the switch either way: its op returns o in bf16
    where the decay is per key channel and the switch is on (else fp32), and its backward receives
    ``do`` in that type."""
    from archdsl.codegen.run import chunked_backward as backward_module

    monkeypatch.setitem(chunked_common.LAUNCH, "o_half", half)
    seen = {}
    real = backward_module.chunked_backward

    def spy(lw, q, k, v, ab, h0, do, *rest):
        seen["do"] = do.dtype
        return real(lw, q, k, v, ab, h0, do, *rest)

    monkeypatch.setattr(backward_module, "chunked_backward", spy)
    compare_backends(layer_of(name), B=1, T=20, dtype=torch.bfloat16, chunk=16, strategy="chunked")
    assert seen["do"] == want


def test_layer_half_o_without_kernels(monkeypatch):
    """The PyTorch form (no GPU, no interpreter) gives o in the same type and stays within bf16's
    tolerance."""
    from archdsl.codegen.run import chunked, ops

    monkeypatch.setitem(chunked_common.LAUNCH, "o_half", True)
    monkeypatch.setattr(chunked, "interpreted", lambda: False)
    monkeypatch.setattr(ops, "interpreted", lambda: False)
    seen = {}
    real = chunked.chunked_op

    def spy(chunk, dot, *types):
        op = real(chunk, dot, *types)

        def call(xs, h0):
            out = op(xs, h0)
            seen["o"] = out[0].dtype
            return out

        return call

    monkeypatch.setattr(chunked, "chunked_op", spy)
    compare_backends(layer_of("gla"), B=2, T=20, dtype=torch.bfloat16, chunk=16, strategy="chunked")
    assert seen["o"] == torch.bfloat16


@pytest.mark.parametrize(
    "name, coefficients",
    [
        ("mamba2", {"lw": torch.float32, "v": torch.bfloat16}),
        ("gdn", {"lw": torch.float32, "q": torch.float32, "k": torch.float32, "v": torch.float32}),
    ],
    ids=["write-16-bit", "delta-fp32"],
)
def test_narrow_coefficients_and_output(name, coefficients, monkeypatch):
    """A bf16 layer's coefficient kernel writes a form's coefficients in bf16 where its products are
    bf16 (no correction), fp32 for a delta rule's TF32 products, the log-decays fp32 always; its
    epilogue writes ``y`` in bf16; the layer stays within the harness' tolerance."""
    from archdsl.codegen.run import chunked, runtime

    seen, real_linear, real_forward = {}, chunked.chunked_linear, runtime.ParallelPart.forward

    def linear(lw, q, k, v, *rest):
        seen.update(lw=lw.dtype, q=q.dtype, k=k.dtype, v=v.dtype)
        return real_linear(lw, q, k, v, *rest)

    def forward(self, xs, cs):
        outs = real_forward(self, xs, cs)
        seen[self.kind] = [o.dtype for o in outs]
        return outs

    monkeypatch.setattr(chunked, "chunked_linear", linear)
    monkeypatch.setattr(runtime.ParallelPart, "forward", forward)
    compare_backends(layer_of(name), B=1, T=20, dtype=torch.bfloat16, chunk=16, strategy="chunked")
    assert {r: seen[r] for r in coefficients} == coefficients
    assert seen["readout"] == [torch.bfloat16]
    monkeypatch.setitem(chunked_common.LAUNCH, "narrow", False)
    seen.clear()
    compare_backends(layer_of(name), B=1, T=20, dtype=torch.bfloat16, chunk=16, strategy="chunked")
    assert seen["readout"] == [torch.float32] and set(seen["token"]) == {torch.float32}
