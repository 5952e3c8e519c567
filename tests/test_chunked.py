"""The chunked strategy (codegen/run/chunked.py): classification from the IR, the chunked algebra against
the step-by-step recurrence, and whole layers against the reference at awkward lengths (chunk 16)."""

from pathlib import Path

import pytest
import torch
from archdsl.codegen.classify import classification, classify
from archdsl.codegen.run.chunked import build_chunked
from archdsl.codegen.run.chunked_kernels import chunked_forward
from archdsl.codegen.run.chunked_torch import chunked_torch, sequential_torch
from kernel_harness import compare_backends, rel_rms

from archdsl.autodiff import extract_cell
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer

LINEAR = {
    "gdn": {"heads": 3},
    "mamba2": {},
    "e88": {"nonlin": "identity"},
    "gla": {},
    "mlstm": {},
}


ROOT = Path(__file__).resolve().parent.parent
#: GLA (a decay per key channel) is a test spec here: variants.md, which every bundled spec cites, has none
PATHS = {name: ROOT / "specs" / f"{name}.rnn" for name in LINEAR} | {"gla": ROOT / "tests/specs/gla.rnn"}


def layer_of(name: str, **overrides):
    return instantiate(parse_file(PATHS[name]), "test", {**LINEAR.get(name, {}), **overrides}).layer


@pytest.mark.parametrize("name", sorted(LINEAR))
def test_linear_specs_are_classified(name):
    form = classify(extract_cell(layer_of(name))).forms[0]
    assert form.key == {"gdn": "i", "mamba2": "s", "e88": "i", "gla": "i", "mlstm": "i"}[name]
    assert form.heads == ("h",)
    assert form.scalar_decay == (name != "gla")  # GLA decays per key channel
    assert (form.a is not None) == (name in ("gdn", "e88"))  # the delta rule's rank-one correction
    assert form.joint == (name in ("gdn", "e88"))  # ... which shares the write's key
    assert (form.tie is not None) == (name == "gdn")  # b = -αβ k̂ (e88's σ = -1: no per-token value)
    assert classification(layer_of(name)).startswith("chunked: ")


def test_nonlinear_update_is_refused_with_its_reason():
    layer = layer_of("e88", nonlin="tanh")
    assert classification(layer) == "tanh around the update: sequential loop"
    with pytest.raises(ValueError, match="tanh around the update"):
        build_chunked(layer)


FIXED_DECAY = """
rnn fixed
hyper dim = 8
axis h = 2
axis i = 4
axis j = 4
project x -> q[h, i], k[h, i], v[h, j]
gamma = DECAY
state S[h, i, j]
S' = gamma * S + k * v
y = sum[i](S' * q)
output y
"""


@pytest.mark.parametrize(
    "decay, chunked",
    [
        ("1 - exp(-(5 + index[h]()) * log(2))", True),  # RetNet's 1 - 2^(-5-h): positive by its range
        ("0.5 + 0.25 * index[h]()", True),
        ("1 - index[h]()", False),  # 0 at h = 1
        ("index[h]() - 0.5", False),  # -0.5 at h = 0
    ],
)
def test_fixed_decay_needs_a_positive_range(decay, chunked):
    """A decay that is a constant of the sizes qualifies when its range is positive (interval
    arithmetic over the index's range), without the spec proving it by writing exp(log(...))."""
    from archdsl.lang.parser import parse

    layer = instantiate(parse(FIXED_DECAY.replace("DECAY", decay)), None, {}).layer
    if chunked:
        assert classification(layer).startswith("chunked: ")
    else:
        reason = "a decay that may be zero or negative: not yet (the chunks need its logarithm)"
        assert classification(layer) == reason


#: a delta rule whose correction's key side (``CORR``) may or may not be a multiple of the write's key
DELTA = """
rnn delta
hyper dim = 8
axis h = 2
axis i = 4
axis j = 4
project x -> q[h, i], k[h, i], v[h, j], beta[h]
C_PROJECTION
kh = l2norm[i](k)
s = sigmoid(beta)
state S[h, i, j]
S' = 0.9 * S + CORR * sum[i](S * kh) + s * kh * v
y = sum[i](S' * q)
output y
"""


def delta_spec(corr: str) -> str:
    c = "project x -> c[h, i]" if "(c)" in corr else ""
    return DELTA.replace("CORR", corr).replace("C_PROJECTION", c)


@pytest.mark.parametrize(
    "corr, joint",
    [
        ("-s * kh", True),  # GatedDeltaNet's shape: both terms on the key kh
        ("-(0.5 * s) * kh", True),  # a product of head values and a negation: still one key
        ("-s * l2norm[i](c)", False),  # another key: the general form
        ("-s * kh * kh", False),  # kh twice is not kh
    ],
)
def test_joint_form_needs_one_key(corr, joint):
    """A correction and a write that are multiples of one key value by values without the key axis
    are one rank-one term (``LinearForm.joint``); any other key side keeps the general form."""
    from archdsl.lang.parser import parse

    layer = instantiate(parse(delta_spec(corr)), None, {}).layer
    form = classify(extract_cell(layer)).forms[0]
    assert form.a is not None and form.joint == joint
    assert ("delta update k (bᵀS + v)ᵀ" in classification(layer)) == joint
    assert (form.tie is not None) == joint  # the read vector is kh: b = σ kh, σ = ρ_a
    assert ("b = σ k, one σ a token" in classification(layer)) == joint
    if joint:
        assert form.a == form.k


def test_general_delta_layer_matches_reference():
    """A delta rule whose correction has its own key runs the general kernels (a, b and k apart)."""
    from archdsl.lang.parser import parse

    layer = instantiate(parse(delta_spec("-s * l2norm[i](c)")), None, {}).layer
    compare_backends(layer, B=2, T=37, chunk=16, strategy="chunked")


E74_DELTA = {"form": "full", "update": "delta", "proj": "noz", "nonlin": "identity"}


def test_readout_cut_at_the_last_linear_contraction():
    """E74's readout sg(Sᵀq) is not linear in the state: the loop stops at Sᵀq, sg runs after it."""
    layer = instantiate(parse_file(ROOT / "specs/e74.rnn"), "test", E74_DELTA).layer
    got = classify(extract_cell(layer))
    form, parts = got.forms[0], got.readouts
    assert form.heads == () and form.a is not None and len(parts) == 1
    simple = instantiate(parse_file(ROOT / "specs/e74.rnn"), "test", {**E74_DELTA, "update": "simple"}).layer
    # sigmoid(l) arrives as a parameter value, positive by its construction in the layer graph
    assert classify(extract_cell(simple)).forms[0].scalar_decay


def test_e74_delta_identity_matches_reference():
    """Short: with no decay and write strength 1 the corrections' triangular system is ill-conditioned,
    and over 17+ steps the initial state's gradient drifts to 3e-5 in fp32 (outputs stay ≤ 6e-6)."""
    layer = instantiate(parse_file(ROOT / "specs/e74.rnn"), "test", E74_DELTA).layer
    compare_backends(layer, B=2, T=5, chunk=16, strategy="chunked")


def test_vector_state_without_contraction_is_refused():
    layer = instantiate(parse_file(ROOT / "specs/e61.rnn"), None, {"dim": 8, "expansion": 1}).layer
    assert "contraction" in classification(layer)


def random_problem(scalar: bool, lowrank: bool, dtype, T=37, K=5, V=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, H = 2, 3

    def r(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, dtype=dtype)

    lw = -torch.rand(B, T, H, *(() if scalar else (K,)), generator=g, dtype=dtype)
    ab = [r(B, T, H, K, scale=0.3) for _ in range({False: 0, True: 2, "joint": 1, "tied": 0}[lowrank])]
    ab += [r(B, T, H, scale=0.6)] if lowrank == "tied" else []  # σ: the read vectors σ k
    return lw, r(B, T, H, K), r(B, T, H, K, scale=0.5), r(B, T, H, V), ab, r(B, H, K, V)


@pytest.mark.parametrize("scalar", [True, False], ids=["head-decay", "key-decay"])
@pytest.mark.parametrize("lowrank", [False, True, "joint", "tied"], ids=["write", "delta", "joint", "tied"])
def test_chunked_algebra_matches_the_recurrence(scalar, lowrank):
    """float64: the chunked form (T not a multiple of the chunk) is the recurrence, to rounding."""
    lw, q, k, v, ab, h0 = random_problem(scalar, lowrank, torch.float64)
    o1, s1 = sequential_torch(lw, q, k, v, ab, h0)
    o2, s2 = chunked_torch(lw, q, k, v, ab, h0, 16)
    assert rel_rms(o2, o1) < 1e-12 and rel_rms(s2, s1) < 1e-12


def assert_backward_matches_autograd(lw, q, k, v, ab, h0):
    """The Triton backward (chunk 16, exact fp32 products) of a float64 problem against autograd of
    the chunked form: every gradient within 1e-6 relative RMS."""
    from archdsl.codegen.run.chunked_backward import chunked_backward

    xs = [x.clone().requires_grad_(True) for x in (lw, q, k, v, *ab, h0)]
    o, hT = chunked_torch(xs[0], xs[1], xs[2], xs[3], xs[4:-1], xs[-1], 16)
    do, dht = torch.randn_like(o), torch.randn_like(hT)
    expected = torch.autograd.grad([o, hT], xs, [do, dht])
    f = [x.float() for x in (lw, q, k, v, h0, do, dht)]
    got = chunked_backward(*f[:4], [x.float() for x in ab], *f[4:], 16, "ieee")
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert rel_rms(g, e) < 1e-6


@pytest.mark.parametrize("bv", [64, 16], ids=["one-value-block", "value-blocks"])
@pytest.mark.parametrize("scalar", [True, False], ids=["head-decay", "key-decay"])
@pytest.mark.parametrize("lowrank", [False, True, "joint", "tied"], ids=["write", "delta", "joint", "tied"])
def test_triton_forward_matches_the_recurrence(scalar, lowrank, bv, monkeypatch):
    """Key size 5 and value size 20 (padded to blocks of 16 and 32, or two blocks of 16), 37 steps in
    chunks of 16."""
    from archdsl.codegen.run import chunked_common

    monkeypatch.setitem(chunked_common.LAUNCH, "bv", bv)
    lw, q, k, v, ab, h0 = random_problem(scalar, lowrank, torch.float32)
    o1, s1 = sequential_torch(*(x.double() for x in (lw, q, k, v)), [x.double() for x in ab], h0.double())
    o2, s2 = chunked_forward(lw, q, k, v, ab, h0, 16, "ieee")
    assert rel_rms(o2, o1) < 1e-6 and rel_rms(s2, s1) < 1e-6


@pytest.mark.parametrize("T", [1, 63, 65, pytest.param(130, marks=pytest.mark.exhaustive)])
@pytest.mark.parametrize("name", sorted(LINEAR))
def test_layer_matches_reference(name, T):
    """Output, final state and every gradient (input, parameters, initial state), fp32 ≤ 1e-5, at
    chunks of 16: shorter than one chunk (1), a partial last chunk (63), one token past a chunk (65).
    T = 130 (eight chunks and two tokens) runs under ``-m exhaustive``: many chunks are covered by
    test_default_chunk_matches_reference at the same length."""
    compare_backends(layer_of(name), B=2, T=T, chunk=16, strategy="chunked")


#: at chunks of 64: the delta rules (E88's undamped, gdn's with its convolutions) and a decay per key
#: channel (GLA) by default; the forms they share with mamba2 and mlstm under ``-m exhaustive``
DEFAULT_CHUNK = [
    n if n in ("e88", "gdn", "gla") else pytest.param(n, marks=pytest.mark.exhaustive) for n in sorted(LINEAR)
]


@pytest.mark.parametrize("name", DEFAULT_CHUNK)
def test_default_chunk_matches_reference(name):
    """Chunks of 64 (the default): the triangular inverse by forward substitution and the decay
    gradients summed term by term stay within fp32 tolerance of the undamped delta rule (E88 identity).
    One batch element: the batch axis' offsets are covered at B = 2 by the tests above and below."""
    compare_backends(layer_of(name), B=1, T=130, chunk=64, strategy="chunked")


@pytest.mark.parametrize("name", sorted(LINEAR))
def test_layer_matches_reference_bf16(name):
    compare_backends(layer_of(name), B=2, T=33, dtype=torch.bfloat16, chunk=16, strategy="chunked")


def test_layer_matches_reference_fp16():
    compare_backends(layer_of("gdn"), B=1, T=20, dtype=torch.float16, chunk=16, strategy="chunked")


@pytest.mark.parametrize("bv", [64, 16], ids=["one-value-block", "value-blocks"])
@pytest.mark.parametrize("scalar", [True, False], ids=["head-decay", "key-decay"])
@pytest.mark.parametrize("lowrank", [False, True, "joint", "tied"], ids=["write", "delta", "joint", "tied"])
def test_triton_backward_matches_autograd(scalar, lowrank, bv, monkeypatch):
    """Every gradient (log-decays, q, k, v, a, b, initial state) against autograd of the chunked form;
    value size 20 and key size 18 each in one block or in two blocks of 16 (the per-token kernels sum
    their products block by block; a head's decay gradient is one partial sum per key block)."""
    from archdsl.codegen.run import chunked_common

    monkeypatch.setitem(chunked_common.LAUNCH, "bv", bv)
    monkeypatch.setitem(chunked_common.LAUNCH, "bk", bv)
    lw, q, k, v, ab, h0 = random_problem(scalar, lowrank, torch.float64, T=37, K=18, V=20)
    assert_backward_matches_autograd(lw, q, k, v, ab, h0)


@pytest.mark.parametrize("scalar", [True, False], ids=["head-decay", "key-decay"])
@pytest.mark.parametrize("lowrank", [False, True, "joint"], ids=["write", "delta", "joint"])
def test_triton_backward_sums_value_block_products(scalar, lowrank, monkeypatch):
    """The products over the value axis (dO Vᵀ, dO Sᵀ; dO Uᵀ, dR Vᵀ, dR Uᵀ with a rank-one correction)
    summed over three value blocks of 16 (value size 40: the last one half full) with the key axis
    (size 18) in one block of 32; every gradient against autograd of the chunked form."""
    from archdsl.codegen.run import chunked_common

    monkeypatch.setitem(chunked_common.LAUNCH, "bv", 16)
    monkeypatch.setitem(chunked_common.LAUNCH, "dqa_bv", 16)  # Q_aᵀ dO before the walk, too
    monkeypatch.setitem(chunked_common.LAUNCH, "bk", 32)
    lw, q, k, v, ab, h0 = random_problem(scalar, lowrank, torch.float64, T=37, K=18, V=40, seed=1)
    assert_backward_matches_autograd(lw, q, k, v, ab, h0)


class Spy:
    """Records its name in ``calls`` when called or launched (``kernel[grid](...)``), then passes on."""

    def __init__(self, real, name: str, calls: list):
        self.real, self.name, self.calls = real, name, calls

    def __call__(self, *xs):
        self.calls.append(self.name)
        return self.real(*xs)

    def __getitem__(self, grid):
        self.calls.append(self.name)
        return self.real[grid]


@pytest.mark.parametrize("lowrank", [False, True, "joint", "tied"], ids=["write", "delta", "joint", "tied"])
@pytest.mark.parametrize("scalar", [True, False], ids=["head-decay", "key-decay"])
def test_dqk_kernels_by_form(scalar, lowrank, monkeypatch):
    """dq, dk (da, db) from chunked_dqk.py's two kernels for a delta rule and from ``chunk_dqk_kernel``
    without a correction (each form calls only its own), against autograd at three value blocks and
    two key blocks of 16 (key size 18, value size 40), two chunks and a partial one."""
    from archdsl.codegen.run import chunked_backward, chunked_common

    calls = []
    for name in ("dqkab", "chunk_dqk_kernel"):
        monkeypatch.setattr(chunked_backward, name, Spy(getattr(chunked_backward, name), name, calls))
    monkeypatch.setitem(chunked_common.LAUNCH, "bv", 16)
    monkeypatch.setitem(chunked_common.LAUNCH, "bk", 16)
    lw, q, k, v, ab, h0 = random_problem(scalar, lowrank, torch.float64, T=37, K=18, V=40, seed=2)
    assert_backward_matches_autograd(lw, q, k, v, ab, h0)
    assert calls == ["dqkab" if lowrank else "chunk_dqk_kernel"]


def test_one_kernel_decay_gradient_by_scan(monkeypatch):
    """``LAUNCH["dg_scan"]``: ``chunk_dqk_kernel``'s decay gradient of its decayed matrix by a scan
    (one decay per head), against autograd; two chunks and a partial one, two key blocks."""
    from archdsl.codegen.run import chunked_common

    monkeypatch.setitem(chunked_common.LAUNCH, "dg_scan", 1)
    monkeypatch.setitem(chunked_common.LAUNCH, "bk", 16)
    lw, q, k, v, ab, h0 = random_problem(True, False, torch.float64, T=37, K=18, V=20, seed=3)
    assert_backward_matches_autograd(lw, q, k, v, ab, h0)


@pytest.mark.parametrize("lowrank", [False, True, "joint"], ids=["write", "delta", "joint"])
def test_walks_take_their_own_launch_settings(lowrank, monkeypatch):
    """``LAUNCH``'s ``states_*`` and ``dstates_*``: the two walks over the chunks in value blocks of 16
    and 32 (value size 40: three and two, the last part full) at 2 warps and 2 stages, the other
    kernels in one block of 64; forward and every gradient against autograd."""
    from archdsl.codegen.run import chunked_common

    meta = dict(BV=64, num_warps=4, C=16)
    settings = dict(states_bv=16, states_warps=2, states_stages=2, dstates_bv=32, dstates_stages=2)
    for key, value in settings.items():
        monkeypatch.setitem(chunked_common.LAUNCH, key, value)
    assert chunked_common.walk_launch("states", meta, 40) == dict(C=16, BV=16, num_warps=2, num_stages=2)
    assert chunked_common.walk_launch("dstates", meta, 40) == dict(C=16, BV=32, num_warps=4, num_stages=2)
    assert chunked_common.walk_launch("dstates", meta, 8)["BV"] == 16  # at most the padded value size
    lw, q, k, v, ab, h0 = random_problem(True, lowrank, torch.float64, T=37, K=18, V=40, seed=4)
    assert_backward_matches_autograd(lw, q, k, v, ab, h0)


def test_token_launch_passes_only_the_settings_given(monkeypatch):
    """The backward's per-token kernels run at one pipeline stage (measured faster on an H100) and the
    common warps; a ``LAUNCH`` setting of None leaves Triton's default."""
    from archdsl.codegen.run import chunked_common

    assert chunked_common.token_launch() == {"num_stages": 1}
    monkeypatch.setitem(chunked_common.LAUNCH, "token_stages", None)
    assert chunked_common.token_launch() == {}
    monkeypatch.setitem(chunked_common.LAUNCH, "token_stages", 1)
    monkeypatch.setitem(chunked_common.LAUNCH, "token_warps", 8)
    assert chunked_common.token_launch() == {"num_stages": 1, "num_warps": 8}


def test_layer_matches_reference_without_kernels(monkeypatch):
    """On a CPU without the Triton interpreter the coefficients, the recurrence and the readout all run
    in PyTorch (reference rules and the chunked algebra of chunked_torch, its gradients by autograd)."""
    from archdsl.codegen.run import chunked, ops

    monkeypatch.setattr(chunked, "interpreted", lambda: False)
    monkeypatch.setattr(ops, "interpreted", lambda: False)
    compare_backends(layer_of("gdn"), B=2, T=20, chunk=16, strategy="chunked")
    compare_backends(layer_of("mamba2"), B=2, T=20, chunk=16, strategy="chunked")


def strided_problem(scalar: bool, lowrank: bool):
    """``random_problem``'s coefficients as the cell hands them over: q and k one per batch element and
    step, shared by the heads (head stride 0), v a slice of a wider tensor, the log-decays transposed."""
    lw, q, k, v, ab, h0 = random_problem(scalar, lowrank, torch.float32, K=18)
    B, T, H, K = q.shape
    q, k = (x[:, :, :1].expand(B, T, H, K) for x in (q, k))
    v = torch.cat([v, torch.randn_like(v)], -1)[..., : v.shape[-1]]
    lw = lw.transpose(0, 1).contiguous().transpose(0, 1)
    return lw, q, k, v, ab, h0


@pytest.mark.parametrize("scalar", [True, False], ids=["head-decay", "key-decay"])
@pytest.mark.parametrize("lowrank", [False, True, "joint", "tied"], ids=["write", "delta", "joint", "tied"])
def test_triton_kernels_read_strided_coefficients(scalar, lowrank):
    """Views (a head stride of 0, a slice, a transposed layout) give the kernels' results on contiguous
    copies exactly, forward and every gradient (the broadcast ones before autograd sums them)."""
    from archdsl.codegen.run.chunked_backward import chunked_backward

    lw, q, k, v, ab, h0 = strided_problem(scalar, lowrank)
    assert q.stride(2) == 0 and not v.is_contiguous() and not lw.is_contiguous()
    dense = [x.contiguous() for x in (lw, q, k, v)]
    got = chunked_forward(lw, q, k, v, ab, h0, 16, "ieee")
    want = chunked_forward(*dense, ab, h0, 16, "ieee")
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    do, dht = torch.randn_like(got[0]), torch.randn_like(got[1])
    got = chunked_backward(lw, q, k, v, ab, h0, do, dht, 16, "ieee")
    want = chunked_backward(*dense, ab, h0, do, dht, 16, "ieee")
    assert all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("scalar", [True, False], ids=["head-decay", "key-decay"])
def test_triton_low_precision_inputs(dtype, scalar):
    """16-bit coefficients read as they are, products in their type (fp32 accumulation; the forms
    without a rank-one correction, ``chunked_common.products``): within 2e-2 of the fp64 recurrence
    on the same rounded inputs; the gradients come back in the inputs' type."""
    from archdsl.codegen.run.chunked_backward import chunked_backward
    from archdsl.codegen.run.chunked_common import DOTS

    lw, q, k, v, ab, h0 = random_problem(scalar, False, torch.float32, K=18)
    q, k, v = (x.to(dtype) for x in (q, k, v))
    xs = [x.double().requires_grad_(True) for x in (lw, q, k, v, h0)]
    o1, s1 = sequential_torch(xs[0], xs[1], xs[2], xs[3], [], xs[4])
    o2, s2 = chunked_forward(lw, q, k, v, ab, h0, 16, DOTS[dtype])
    assert o2.dtype == torch.float32 and rel_rms(o2, o1) < 2e-2 and rel_rms(s2, s1) < 2e-2
    do, dht = torch.randn_like(o2), torch.randn_like(s2)
    expected = torch.autograd.grad([o1, s1], xs, [do.double(), dht.double()])
    got = chunked_backward(lw, q, k, v, ab, h0, do, dht, 16, DOTS[dtype])
    assert [g.dtype for g in got] == [x.dtype for x in (lw, q, k, v)] + [torch.float32]
    for g, e in zip(got, expected):
        assert rel_rms(g, e) < 2e-2


def test_cell_hands_inputs_over_without_copies(monkeypatch):
    """Mamba2's B and C (inputs of the cell, one per state channel, shared by the heads) reach the op
    with a head stride of 0 (not broadcast into a copy); the log-decays and v as the generated kernel
    wrote them (fp32, and v in the layer's type: ``chunked._narrow``)."""
    from archdsl.codegen.run import chunked

    seen = {}
    real = chunked.chunked_op

    def spy(chunk, dot, *types):
        op = real(chunk, dot, *types)

        def call(xs, h0):
            seen.update(dot=dot, xs=xs)
            return op(xs, h0)

        return call

    monkeypatch.setattr(chunked, "chunked_op", spy)
    compare_backends(layer_of("mamba2"), B=2, T=20, dtype=torch.bfloat16, chunk=16, strategy="chunked")
    lw, q, k, v = seen["xs"]
    assert seen["dot"] == "bf16"  # no rank-one correction: 16-bit products
    assert q.stride(2) == k.stride(2) == 0
    assert lw.dtype == torch.float32 and v.dtype == torch.bfloat16


def test_tf32_emulation_cuts_the_products_operands(monkeypatch):
    """``LAUNCH["tf32_emulated"]``: under the interpreter "tf32" products read their operands cut to
    TF32's 10 mantissa bits (off: exact fp32, as "ieee"), so the forward moves by TF32's rounding."""
    from archdsl.codegen.run import chunked_common

    lw, q, k, v, ab, h0 = random_problem(True, "joint", torch.float32)
    exact = chunked_forward(lw, q, k, v, ab, h0, 16, "ieee")[0]
    assert torch.equal(chunked_forward(lw, q, k, v, ab, h0, 16, "tf32")[0], exact)
    monkeypatch.setitem(chunked_common.LAUNCH, "tf32_emulated", True)
    cut = chunked_forward(lw, q, k, v, ab, h0, 16, "tf32")[0]
    assert 1e-5 < rel_rms(cut, exact) < 1e-2  # 2.1e-3: truncation, compounded over 37 steps


def test_tied_correction_reaches_the_kernels_as_one_value_a_token(monkeypatch):
    """GatedDeltaNet's read vector -αβ k̂ reaches the chunked op as σ [B, T, H] (``LAUNCH["tie"]``),
    b [B, T, H, K] with the switch off; the layer's output and every gradient agree (fp32, T 37,
    chunks of 16: the same values, summed in another order)."""
    from archdsl.codegen.run import chunked, chunked_common

    def run(tie: bool):
        monkeypatch.setitem(chunked_common.LAUNCH, "tie", tie)
        shapes = []
        real = chunked.chunked_linear
        with monkeypatch.context() as mp:
            mp.setattr(
                chunked, "chunked_linear", lambda *a, **k: shapes.append(a[4][0].dim()) or real(*a, **k)
            )
            return shapes, _gdn_run()

    def _gdn_run():
        layer = layer_of("gdn")
        m = RecurrentLayer(layer, backend="triton", seed=0, chunk=16, strategy="chunked")
        x = torch.randn(2, 37, layer.dim, generator=torch.Generator().manual_seed(3), requires_grad=True)
        y, _ = m(x)
        params = [p for p in m.parameters() if p.requires_grad]
        return [y, *torch.autograd.grad((y * y).sum(), [x, *params])]

    (tied_shapes, tied), (whole_shapes, whole) = run(True), run(False)
    assert (tied_shapes, whole_shapes) == ([3], [4])
    for a, b in zip(tied, whole, strict=True):
        assert rel_rms(a, b) < 1e-5
