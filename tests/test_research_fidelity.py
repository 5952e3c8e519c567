"""The research-default choices, settings and initialisations (docs/research.md).

The spectral norm against a direct computation of the research's power iteration; the initialisers
against torch's; the new choices of E74 and E10 through the checker, the parameter counts and the
kernel harness. (The comparison with the research code itself, benchmarks/research_compare.py, needs
a checkout of that code and is not a test.)
"""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT
from kernel_harness import compare_backends

from archdsl.errors import ArchdslError
from archdsl.inits import initialise
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse, parse_file
from archdsl.layer import RecurrentLayer, SpectralNorm


def layer_of(name: str, preset: str | None = "test", **sets):
    return instantiate(parse_file(ROOT / "specs" / f"{name}.rnn"), preset=preset, overrides=sets).layer


# ---- spectral norm ---------------------------------------------------------------------------------
def research_spectral_norm(w, u, rho, iters, eps=1e-8):
    """W * rho / (|u W v| + eps) after ``iters`` steps normalising by norm + eps, written out."""
    for _ in range(iters):
        v = w.t() @ u
        v = v / (torch.linalg.vector_norm(v) + eps)
        u = w @ v
        u = u / (torch.linalg.vector_norm(u) + eps)
    return w * (rho / ((u @ w @ v).abs() + eps)), u


@pytest.mark.parametrize("iters", [1, 3, 5])
def test_spectral_norm_is_the_research_power_iteration(iters):
    gen = torch.Generator().manual_seed(iters)
    w = torch.randn(7, 7, generator=gen, dtype=torch.float64)
    sn = SpectralNorm(7, 0.99, iters=iters).double().train()
    u0 = sn.u.clone()
    want, u_next = research_spectral_norm(w, u0, 0.99, iters)
    torch.testing.assert_close(sn(w), want, rtol=1e-15, atol=0)
    torch.testing.assert_close(sn.u, u_next, rtol=1e-15, atol=0)  # training carries u over
    sn.eval()
    sn(w)
    torch.testing.assert_close(sn.u, u_next, rtol=0, atol=0)  # evaluation leaves it


def test_spectral_norm_epsilon_is_the_researchs():
    """For a tiny matrix the eps of norm + 1e-8 and sigma + 1e-8 is visible in the output."""
    w = torch.diag(torch.tensor([1e-7, 5e-8], dtype=torch.float64))
    u = torch.tensor([1.0, 0.0], dtype=torch.float64)
    sn = SpectralNorm(2, 1.0, iters=3).double()
    sn.u = u.clone()
    got = sn(w)
    torch.testing.assert_close(got, research_spectral_norm(w, u, 1.0, 3)[0], rtol=1e-15, atol=0)
    without_eps = research_spectral_norm(w, u, 1.0, 3, eps=0.0)[0]
    assert (got - without_eps).abs().max() > 0.05  # without the epsilon: W / sigma_max exactly
    assert SpectralNorm(2, 1.0).iters == 3 and SpectralNorm(2, 1.0).eps == 1e-8
    with pytest.raises(ValueError, match="at least 1"):
        SpectralNorm(2, 1.0, iters=0)


@pytest.mark.parametrize(("spec", "n_norms"), [("e1", 1), ("e42", 1), ("e70", 2)])
def test_layer_passes_its_spectral_iterations_to_every_norm(spec, n_norms):
    layer = layer_of(spec)
    for iters, made in [(3, RecurrentLayer(layer)), (7, RecurrentLayer(layer, spectral_iters=7))]:
        norms = [s for s in made.modules() if isinstance(s, SpectralNorm)]
        assert len(norms) == n_norms and {s.iters for s in norms} == {iters}


# ---- initialisers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("blocks", [1, 3, 4])
def test_orthogonal_blocks_are_a_row_block_of_torchs_stacked_orthogonal(blocks):
    expr = parse(f"rnn t\nhyper dim = 4\nparam W[i, j] = orthogonal(1.5, {blocks})\n").body
    init = next(s for s in expr if hasattr(s, "init")).init
    got = initialise(init, (5, 5), ("i", "j"), {}, torch.Generator().manual_seed(0))
    stacked = torch.empty(5 * blocks, 5)
    torch.nn.init.orthogonal_(stacked, gain=1.5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, stacked[:5])


@pytest.mark.parametrize("bad", ["0", "1.5"])
def test_orthogonal_blocks_must_be_a_positive_integer(bad):
    src = (
        "rnn t\nhyper dim = 4\naxis i = 4\naxis j = 4\nproject x -> u[i]\n"
        f"param W[i, j] = orthogonal(1, {bad})\nstate h[i]\n"
        "h' = tanh(u + sum[j](W * h[j]))\ny = h'\noutput y\n"
    )
    with pytest.raises(ArchdslError, match="blocks must be a positive integer"):
        instantiate(parse(src))


@pytest.mark.parametrize(("name", "gates"), [("lstm", 4), ("gru", 3)])
def test_lstm_gru_research_initialisation(name, gates):
    layer = layer_of(name, preset=None, dim=64, expansion=2)
    m = RecurrentLayer(layer, seed=0).double()
    d = layer.sizes["i"]
    w_in = m.proj["0"].weight
    assert abs(w_in.std().item() - 0.02) < 0.002 and abs(w_in.mean().item()) < 0.002  # N(0, 0.02)
    w_ih = m.proj["1"].weight  # [gates * d, d]: orthonormal columns
    torch.testing.assert_close(w_ih.t() @ w_ih, torch.eye(d, dtype=torch.float64), atol=1e-6, rtol=0)
    for p in [v for k, v in m.params.items() if k.startswith("W_h")]:
        s = torch.linalg.svdvals(p)  # a row block of an orthonormal-column matrix: a contraction
        assert s.max() <= 1 + 1e-6 and abs((s**2).sum().item() - d / gates) < 0.25 * d / gates


# ---- the choices of E74 and E10 ----------------------------------------------------------------------
def test_e74_simple_decay_starts_where_the_research_did():
    diag = RecurrentLayer(layer_of("e74", form="diagonal", update="simple"))
    full = RecurrentLayer(layer_of("e74", form="full", update="simple"))
    assert torch.equal(diag.params["l"].detach(), torch.full((3,), -0.1))
    assert full.params["l"].item() == 0.0


def test_e74_in_and_out_maps_start_as_train_e74s():
    m = RecurrentLayer(layer_of("e74", preset=None, dim=64, n=16), seed=0)
    for w in (m.proj["0"].weight, m.out.weight):
        assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002


def z_weights(**sets) -> bool:
    return any("wz" in [o for o, _ in p.outputs] for p in layer_of("e74", proj="full", **sets).projections)


def test_e74_zuse_delta_has_z_only_where_the_research_reads_it():
    assert z_weights(form="full", update="delta", zuse="delta")
    for form, update in [("full", "simple"), ("diagonal", "delta"), ("diagonal", "simple")]:
        assert not z_weights(form=form, update=update, zuse="delta")
        assert z_weights(form=form, update=update, zuse="all")


def test_e74_diag_full_presets_keep_their_count_and_z():
    """zuse = all keeps the research's count: the noz preset plus n (d + 1) per layer."""
    for update in ("delta", "simple"):
        full = layer_of("e74", preset=f"E74_diag_{update}_full")
        noz = layer_of("e74", preset=f"E74_diag_{update}_noz")
        assert full.choices["zuse"] == "all" and full.choices["input"] == "identity"
        n, d = full.sizes["i"], full.sizes["c"]
        assert full.param_count() == noz.param_count() + n * (d + 1)


def test_e74_input_identity_feeds_the_projection_straight_in():
    x = torch.randn(1, 2, 6, generator=torch.Generator().manual_seed(0))
    for act, fn in [("identity", lambda t: t), ("silu", torch.nn.functional.silu)]:
        m = RecurrentLayer(layer_of("e74", input=act), seed=0)
        k = m.project(x)["k"]
        xt = x @ m.proj["0"].weight.t()
        torch.testing.assert_close(k, fn(xt) @ m.proj["1"].weight[:3].t())


def test_e10_wnorm():
    assert not [s for s in RecurrentLayer(layer_of("e10")).modules() if isinstance(s, SpectralNorm)]
    assert (
        len(
            [
                s
                for s in RecurrentLayer(layer_of("e10", wnorm="spectral")).modules()
                if isinstance(s, SpectralNorm)
            ]
        )
        == 1
    )
    assert layer_of("e10", preset="E10_d512").choices["wnorm"] == "none"


KERNEL_CASES = [
    ("e74", {"input": "silu"}),
    ("e74", {"form": "full", "update": "simple", "proj": "full", "zuse": "delta"}),
    ("e74", {"form": "full", "update": "simple", "proj": "full", "zuse": "all"}),
    ("e74", {"form": "diagonal", "update": "delta", "proj": "full", "zuse": "delta"}),
    ("e74", {"form": "diagonal", "update": "simple", "proj": "full", "zuse": "all"}),
    ("e10", {"wnorm": "spectral"}),
]


@pytest.mark.parametrize(
    ("name", "sets"), KERNEL_CASES, ids=[f"{n}-{'-'.join(s.values())}" for n, s in KERNEL_CASES]
)
def test_new_choices_pass_the_kernel_harness(name, sets):
    compare_backends(layer_of(name, **sets), B=2, T=5, chunk=4)


# ---- the libraries' initialisation --------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, preset",
    [("gdn", "GDN_100m"), ("mamba2", "Mamba2_100m")]
    # the zoo specs whose library layers leave every map at nn.Linear's default (mamba_ssm's dt_proj
    # init, U(±dt_rank^-1/2), is the same bound); fla 0.6.0, mamba_ssm 2.3.2.post1
    + [("gla", "GLA_100m"), ("retnet", "RetNet_100m"), ("deltanet", "DeltaNet_100m")]
    + [("hgrn2", "HGRN2_100m"), ("kda", "KDA_100m"), ("gated_deltaproduct", "GatedDeltaProduct_100m")]
    + [("mamba", "Mamba_130m")],
)
def test_library_specs_start_their_maps_as_torch_linear(spec, preset):
    """Each spec starts like the library layer it equals (gdn.rnn as fla's GatedDeltaNet, mamba2.rnn
    as mamba_ssm's Mamba2, …): every projection and the output map as torch's ``nn.Linear`` default,
    U(±1/√fan_in), whatever the number of outputs (xavier's bound would depend on it). A spec that
    starts elsewhere trains at another loss per step than the library (benchmarks/same_init.py)."""
    torch.manual_seed(0)
    layer = RecurrentLayer(layer_of(spec, preset))
    maps = {name: p for name, p in layer.named_parameters() if name.endswith(".weight")}
    assert "out.weight" in maps and any(n.startswith("proj.") for n in maps)
    for name, w in maps.items():
        torch.manual_seed(0)
        expected = torch.nn.Linear(w.shape[1], w.shape[0], bias=False).weight
        bound = 1 / w.shape[1] ** 0.5
        assert w.abs().max() <= bound, name
        assert w.std().item() == pytest.approx(expected.std().item(), rel=0.03), name


# ---- the RWKV layers' own initialisation (fla 0.6.0 fla/layers/rwkv6.py, rwkv7.py) ---------------
def zoo_layer(spec: str, preset: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return dict(RecurrentLayer(layer_of(spec, preset)).named_parameters())


def assert_uniform(w: torch.Tensor, bound: float, name: str):
    """Drawn from U(-bound, bound): inside it, with its standard deviation bound / sqrt(3)."""
    assert w.abs().max() <= bound, name
    assert w.std().item() == pytest.approx(bound / 3**0.5, rel=0.03), name


def assert_orthogonal(w: torch.Tensor, gain: float, name: str):
    """torch's ``orthogonal_(w, gain)``: orthonormal rows or columns (the shorter side) times gain."""
    small = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    torch.testing.assert_close(small, gain**2 * torch.eye(small.shape[0]), atol=1e-5, rtol=0, msg=name)


def test_rwkv6_starts_as_flas_initialize_weights():
    """RWKV6Attention.__init__ applies ``_initialize_weights``: every nn.Linear that is not inside
    the decay LoRA xavier-uniform with gain 2^-2.5 over the library's matrix (x_proj[2] is one
    [dim, 5 rank] matrix, the spec's er..eg its five column blocks), the LoRA's first map zero and
    its second orthogonal with gain 0.1; the lerp mu, x_bias and the bonus stay at their torch.zeros."""
    p = zoo_layer("rwkv6", "RWKV6_100m")
    dim, rank = 1024, 32
    gain = 2**-2.5

    def xavier(fan_out, fan_in):
        return gain * (6 / (fan_in + fan_out)) ** 0.5

    assert_uniform(p["proj.lr_lw_lk_lv_lg.weight"], xavier(5 * rank, dim), "x_proj.0")
    for s in ("er", "ew", "ek", "ev", "eg"):
        assert_uniform(p[f"proj.{s}.weight"], xavier(dim, 5 * rank), s)
    for s in ("r", "k", "v", "g"):
        assert_uniform(p[f"proj.{s}.weight"], xavier(*p[f"proj.{s}.weight"].shape), s)
    assert_uniform(p["out.weight"], xavier(dim, dim), "o_proj")
    assert not p["proj.wl.weight"].any()
    assert_orthogonal(p["proj.wz.weight"], 0.1, "w_proj.lora.2")
    assert not p["params.mu_x"].any() and not p["params.u"].any()
    assert not any(p[f"params.bias_{s}"].any() for s in "rwkvg")


def test_rwkv7_starts_as_flas_first_layer():
    """RWKV7Attention._initialize_weights at layer_idx 0 of num_hidden_layers 2 (oracle_maps.py),
    written out as fla writes it: the lerps, k_k, k_a, r_k, the GroupNorm weight, r/k/v orthogonal,
    the output map zero; each LoRA (LoRA._initialize_weights) zero, then orthogonal with gain 0.1."""
    p = zoo_layer("rwkv7", "RWKV7_100m")
    dim, n, layer_idx, layers = 1024, 64, 0, 2
    ratio_1_to_almost0 = 1.0 - layer_idx / layers
    ddd = torch.arange(dim) / dim
    linear = torch.arange(dim) / (dim - 1) - 0.5
    for name, power in dict(r=0.2, w=0.9, k=0.7, v=0.7, a=0.9, g=0.2).items():
        expected = 1.0 - torch.pow(ddd, power * ratio_1_to_almost0)
        torch.testing.assert_close(p[f"params.mu_{name}"], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(p["params.k_k"].flatten(), 0.71 - linear * 0.1, atol=1e-6, rtol=0)
    constants = {"k_a": 1.02, "r_k": -0.04, "gn_w": ((layer_idx + 1) / layers) ** 0.7, "gn_b": 0.0}
    for name, value in constants.items():
        torch.testing.assert_close(p[f"params.{name}"], torch.full((dim // n, n), value), msg=name)
    assert_orthogonal(p["proj.r.weight"], 1.0, "r_proj")
    assert_orthogonal(p["proj.k.weight"], 0.1, "k_proj")
    assert_orthogonal(p["proj.v.weight"], 1.0, "v_proj")
    assert not p["out.weight"].any()
    for first, second in (("wl", "wz"), ("al", "az"), ("gl", "g")):
        assert not p[f"proj.{first}.weight"].any(), first
        assert_orthogonal(p[f"proj.{second}.weight"], 0.1, second)


# ---- the libraries' projection biases (bias(EXPR)) --------------------------------------------
def test_mamba_dt_bias_is_the_inverse_softplus_of_a_log_uniform_time_step():
    """mamba_ssm's Mamba.__init__: dt = exp(U(log 1e-3, log 0.1)).clamp(min=1e-4), dt_proj.bias =
    dt + log(-expm1(-dt)), so softplus(bias) is dt again and log dt is uniform on its interval."""
    bias = zoo_layer("mamba", "Mamba_130m")["proj.dtr.bias"].detach().double()
    dt = torch.nn.functional.softplus(bias)
    lo, hi = torch.log(torch.tensor(1e-3)).item(), torch.log(torch.tensor(0.1)).item()
    log_dt = torch.log(dt)
    assert bias.numel() == 2 * 768
    assert log_dt.min() >= lo - 1e-5 and log_dt.max() <= hi + 1e-5
    assert log_dt.mean().item() == pytest.approx((lo + hi) / 2, abs=0.1)
    assert log_dt.std().item() == pytest.approx((hi - lo) / 12**0.5, rel=0.05)


@pytest.mark.parametrize(
    ("spec", "preset", "key", "fan_in"),
    [("gla", "GLA_100m", "proj.gk.bias", 16), ("kda", "KDA_100m", "proj.go.bias", 128)],
)
def test_fla_gate_biases_start_as_torch_linear(spec, preset, key, fan_in):
    """gla's gk_proj[1] and kda's g_proj[1] are nn.Linear with a bias: U(±1/√fan_in), fan_in the
    rank of the low-rank gate (fla 0.6.0 leaves it at torch's default)."""
    bias = zoo_layer(spec, preset)[key].detach()
    assert bias.abs().max() <= 1 / fan_in**0.5, key
    assert bias.std().item() == pytest.approx(1 / (3 * fan_in) ** 0.5, rel=0.1), key


def test_rwkv7_lora_biases_are_flas():
    """RWKV7Attention._initialize_weights at layer_idx 0 of 2, written out as fla writes it:
    w_lora's bias www + 0.5 + 2.5 zigzag, a_lora's -0.19 + 0.3 zigzag + 0.4 linear."""
    p = zoo_layer("rwkv7", "RWKV7_100m")
    dim, n, layer_idx, layers = 1024, 64, 0, 2
    ratio_0_to_1 = layer_idx / (layers - 1)
    www, zigzag, linear = torch.zeros(dim), torch.zeros(dim), torch.zeros(dim)
    for m in range(dim):
        linear[m] = m / (dim - 1) - 0.5
        zigzag[m] = ((m % n) - ((n - 1) / 2)) / ((n - 1) / 2)
        zigzag[m] = zigzag[m] * abs(zigzag[m])
        www[m] = -6 + 6 * (m / (dim - 1)) ** (1 + 1 * ratio_0_to_1**0.3)
    wz, az = p["proj.wz.bias"].detach(), p["proj.az.bias"].detach()
    torch.testing.assert_close(wz, www + 0.5 + zigzag * 2.5, atol=1e-5, rtol=0)
    torch.testing.assert_close(az, -0.19 + zigzag * 0.3 + linear * 0.4, atol=1e-6, rtol=0)
