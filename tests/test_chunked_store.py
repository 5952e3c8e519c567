"""The chunked kernels' stored intermediates in a 16-bit layer's own type (``LAUNCH["store_half"]``,
``chunked_common.store_dtype`` and ``forward_store``): which tensor takes which type per layer type,
form and switch; each rounded once where stored (the walks carry fp32); bf16 layers within the
harness' bound with the switch either way; the kept and the rerun forward alike; fp32 layers
unchanged to the bit."""

import pytest
import torch
from archdsl.codegen.run import chunked_backward, chunked_common, chunked_dqk, chunked_kernels
from archdsl.codegen.run.chunked_backward import chunked_backward as backward
from archdsl.codegen.run.chunked_kernels import chunked_forward_kept
from kernel_harness import TOLERANCE, chunked_op_inputs, compare_backends, rel_rms
from test_chunked import layer_of, random_problem
from test_chunked_keep import gradients

from archdsl.layer import RecurrentLayer

F32, BF16 = torch.float32, torch.bfloat16
KERNELS = {
    chunked_kernels: ("chunk_prep_kernel", "chunk_states_kernel", "chunk_output_kernel"),
    chunked_backward: ("chunk_dstates_kernel", "chunk_dv_kernel", "chunk_dr_kernel", "chunk_dqk_kernel"),
    chunked_dqk: ("chunk_dmat_kernel", "chunk_dqkab_kernel"),
}
#: the stored intermediates' types in a bf16 layer with the switch on, by the pointer names the kernels
#: take them as (a delta rule's forward ones stay fp32: ``forward_store``; T⁻¹ always)
STORED = {
    "delta": {"states": F32, "u0_out": F32, "u_out": F32, "w_out": F32, "inv_out": F32}
    | {"dstates": BF16, "dr_out": BF16, "dmat": BF16},
    "write": {"states": BF16, "dstates": BF16},
}


class Recorder:
    """A kernel that records the type of every tensor it is launched with, by argument name."""

    def __init__(self, real, seen: dict):
        self.real, self.seen = real, seen

    def __getitem__(self, grid):
        def launch(*args, **kw):
            for name, x in zip(self.real.arg_names, args):
                if isinstance(x, torch.Tensor):
                    self.seen.setdefault(name, set()).add(x.dtype)
            return self.real[grid](*args, **kw)

        return launch


def record_types(monkeypatch) -> dict:
    seen: dict = {}
    for module, names in KERNELS.items():
        for name in names:
            monkeypatch.setattr(module, name, Recorder(getattr(module, name), seen))
    return seen


def rounded(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> bf16 as the kernels store it: a GPU rounds to nearest, the interpreter truncates."""
    return x.bfloat16() if x.is_cuda else (x.view(torch.int32) & -65536).view(torch.float32).bfloat16()


def test_store_types_follow_the_switch_the_layer_and_the_form(monkeypatch):
    monkeypatch.setitem(chunked_common.LAUNCH, "store_half", True)
    types = [torch.bfloat16, torch.float16, torch.float32, torch.float64]
    assert [chunked_common.store_dtype(t) for t in types] == [*types[:2], F32, F32]
    assert [chunked_common.forward_store(t, False) for t in types[:3]] == types[:3]
    assert {chunked_common.forward_store(t, True) for t in types[:3]} == {F32}
    monkeypatch.setitem(chunked_common.LAUNCH, "store_half", False)
    assert {chunked_common.store_dtype(t) for t in types} == {F32}


@pytest.mark.parametrize("lowrank", [False, True], ids=["write", "delta"])
def test_stored_copies_are_rounded_once_and_read_widened(lowrank):
    """Without a correction the kept states are the fp32 run's rounded (the walk carries fp32: the
    final state is the same to the bit) and o reads them widened, within bf16's rounding of the fp32
    run's; a delta rule's kept tensors stay fp32 and equal. The backward's gradients come within
    bf16's rounding of the fp32-stored run's, and differ from them (the stores took effect)."""
    lw, q, k, v, ab, h0 = random_problem(True, lowrank, F32, K=18)
    o32, s32, kept32 = chunked_forward_kept(lw, q, k, v, ab, h0, 16, "ieee")
    o16, s16, kept16 = chunked_forward_kept(lw, q, k, v, ab, h0, 16, "ieee", F32, BF16)
    assert torch.equal(s16, s32)
    if lowrank:
        assert [t.dtype for t in kept16] == [F32] * 5  # states, U, W, T⁻¹, G
        assert all(torch.equal(a, b) for a, b in zip(kept16, kept32)) and torch.equal(o16, o32)
    else:
        assert kept16[0].dtype == BF16 and torch.equal(kept16[0], rounded(kept32[0]))
        assert 0 < rel_rms(o16, o32) < 1e-2
    do, dht = torch.randn_like(o32), torch.randn_like(s32)
    want = backward(lw, q, k, v, ab, h0, do, dht, 16, "ieee", kept32)
    got = backward(lw, q, k, v, ab, h0, do, dht, 16, "ieee", kept16, BF16)
    assert [g.dtype for g in got] == [g.dtype for g in want]
    errors = [rel_rms(a, b) for a, b in zip(got, want)]
    assert max(errors) < 1e-2 and any(e > 0 for e in errors), errors


def worst(errors: dict) -> tuple[str, float]:
    name = max(errors, key=errors.get)
    return name, errors[name]


@pytest.mark.parametrize("name", ["gdn", "mamba2"])
def test_bf16_layer_within_the_bound_either_way(name, monkeypatch, capsys):
    """The bf16 layer's output, final state and every gradient within the harness' bound with the
    switch off and on, each stored tensor in the type ``STORED`` says (all fp32 with it off); the
    worst tensor's error printed for both, and the errors differ (the switch took effect)."""
    form = "delta" if name == "gdn" else "write"
    errors, seen = {}, {}
    for half in (False, True):
        monkeypatch.setitem(chunked_common.LAUNCH, "store_half", half)
        with monkeypatch.context() as m:
            seen[half] = record_types(m)
            errors[half] = compare_backends(
                layer_of(name), B=1, T=20, dtype=BF16, chunk=16, strategy="chunked"
            )
    assert {n: seen[False][n] for n in STORED[form]} == {n: {F32} for n in STORED[form]}
    assert {n: seen[True][n] for n in STORED[form]} == {n: {t} for n, t in STORED[form].items()}
    with capsys.disabled():
        print(f"\n{name} bf16, worst: store_half off {worst(errors[False])}, on {worst(errors[True])}")
    assert errors[True] != errors[False]
    assert worst(errors[True])[1] <= TOLERANCE[BF16]


def bf16_gradients(name: str, keep: bool, monkeypatch) -> tuple[list[torch.Tensor], dict]:
    """y's and every gradient of one bf16 forward+backward (T 37, chunks of 16) with the switch on,
    and the types the kernels were launched with."""
    monkeypatch.setitem(chunked_common.LAUNCH, "store_half", True)
    monkeypatch.setitem(chunked_common.LAUNCH, "keep", keep)
    with monkeypatch.context() as m:
        seen = record_types(m)
        layer = layer_of(name)
        model = RecurrentLayer(layer, backend="triton", seed=0, chunk=16, strategy="chunked").to(BF16)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 37, layer.dim, generator=g).to(BF16).requires_grad_(True)
        y, final = model(x)
        loss = (y.float() * torch.randn(y.shape, generator=g)).sum()
        loss = loss + sum((f.float() ** 2).sum() for f in final.values())
        leaves = [x, *(p for p in model.parameters() if p.requires_grad)]
        return [y.detach(), *torch.autograd.grad(loss, leaves)], seen


@pytest.mark.parametrize("name", ["gdn", "mamba2"])
def test_kept_and_rerun_store_alike(name, monkeypatch):
    """With 16-bit storage the backward that reruns the forward's kernels stores what the kept forward
    stored, in the same types: a delta rule's gradients to the bit (TF32 products both ways); without
    a correction the kept states come from bf16 products, the rerun's from TF32 ones: within the
    harness' bound (mamba2's worst, a parameter's, 1.2e-2 apart with the switch on or off)."""
    kept, seen_kept = bf16_gradients(name, True, monkeypatch)
    rerun, seen_rerun = bf16_gradients(name, False, monkeypatch)
    form = "delta" if name == "gdn" else "write"
    assert {n: seen_kept[n] for n in STORED[form]} == {n: seen_rerun[n] for n in STORED[form]}
    for a, b in zip(kept, rerun):
        assert torch.equal(a, b) if form == "delta" else rel_rms(a, b) <= TOLERANCE[BF16]


@pytest.mark.parametrize("name", ["gdn", "mamba2"])
def test_fp32_layer_unchanged_by_the_switch(name, monkeypatch):
    """An fp32 layer stores fp32 whatever the switch says: y and every gradient to the bit."""
    monkeypatch.setitem(chunked_common.LAUNCH, "store_half", True)
    on, _ = gradients(name, True, monkeypatch)
    monkeypatch.setitem(chunked_common.LAUNCH, "store_half", False)
    off, _ = gradients(name, True, monkeypatch)
    assert len(on) == len(off) > 3 and all(torch.equal(a, b) for a, b in zip(on, off))


@pytest.mark.parametrize("lowrank", [False, True], ids=["write", "delta"])
def test_fake_outputs_have_the_stored_types(lowrank, monkeypatch):
    """``torch.library.opcheck`` of the op with 16-bit storage: its fake kept tensors have the real
    ones' types (bf16 states without a correction; fp32 states, U, W and T⁻¹ with one; then G, fp32)."""
    from archdsl.codegen.run.ops import chunked_op

    monkeypatch.setitem(chunked_common.LAUNCH, "keep", True)
    xs, h0 = chunked_op_inputs(lowrank)
    op = chunked_op(16, "ieee", F32, BF16)
    out = op(xs, h0)
    assert [t.dtype for t in out[2:]] == ([F32] * 4 if lowrank else [BF16]) + [F32]
    tests = ("test_schema", "test_faketensor", "test_autograd_registration")
    torch.library.opcheck(op.custom, (xs, h0), test_utils=tests)
