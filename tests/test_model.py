"""The byte-level LM (variants.md §1) and the baselines (§5)."""

import ast
import importlib.machinery
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archdsl.errors import ArchdslError
from archdsl.lm import blocks
from archdsl.lm.blocks import NORM_EPS
from archdsl.lm.budget import sizes
from archdsl.lm.zoo import ModelConfig, build_model

TINY = {
    "e88": ModelConfig("e88", dim=16, depth=2, sets={"heads": 2, "n": 4}),
    "llama": ModelConfig("llama", dim=32, depth=2, sets={"head_dim": 8}),
    "lstm": ModelConfig("lstm", dim=8, depth=2),
    "gru": ModelConfig("gru", dim=8, depth=2),
    "nn-lstm": ModelConfig("nn-lstm", dim=8, depth=2),
    "nn-gru": ModelConfig("nn-gru", dim=8, depth=2),
}


def rms(x, w):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS) * w


def test_lm_is_the_equations_of_section_1():
    """y0 = E[bytes]; r = r + y; y = Mixer(RMSNorm(r)); logits = RMSNorm(r + y) Eᵀ."""
    model = build_model(TINY["e88"])
    idx = torch.randint(0, 256, (2, 9))
    E = model.embed.weight
    y, r = E[idx], torch.zeros(2, 9, 16)
    for norm, mixer in zip(model.norms, model.mixers):
        r = r + y
        y, _ = mixer.layer(rms(r, norm.weight))
    want = rms(r + y, model.norm_f.weight) @ E.T
    torch.testing.assert_close(model(idx), want, rtol=1e-5, atol=1e-5)


def test_head_is_tied_and_counted_once():
    model = build_model(TINY["e88"])
    assert model.info["params"] == sum(p.numel() for p in model.parameters()) == sizes(TINY["e88"]).params
    names = [n for n, _ in model.named_parameters()]
    assert sum("embed" in n for n in names) == 1


def test_every_spec_runs_in_the_lm(spec_path):
    """Each bundled spec at a small size: logits [B, T, 256], finite, and a gradient for every weight."""
    from archdsl.lang.checker import declarations
    from archdsl.lang.parser import parse_file

    presets = declarations(parse_file(spec_path)).presets
    cfg = ModelConfig(str(spec_path), preset="test" if "test" in presets else None, depth=1)
    if "test" not in presets:
        pytest.skip(f"{spec_path.name} has no 'test' preset (tiny shapes)")
    model = build_model(cfg)
    logits = model(torch.randint(0, 256, (2, 3)))
    assert logits.shape == (2, 3, 256) and torch.isfinite(logits).all()
    logits.float().logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(TINY))
def test_models_are_causal(name):
    """Changing the bytes after position t leaves the logits up to t unchanged."""
    model = build_model(TINY[name]).double()
    a = torch.randint(0, 256, (2, 12))
    b = a.clone()
    b[:, 7:] = torch.randint(0, 256, (2, 5))
    la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :7], lb[:, :7])
    assert not torch.allclose(la[:, 7:], lb[:, 7:])


@pytest.mark.parametrize("name", sorted(TINY))
def test_info_describes_the_model(name):
    cfg = TINY[name]
    info = build_model(cfg).info
    s = sizes(cfg)
    assert info["model"] == name and info["params"] == s.params
    assert (info["dim"], info["depth"], info["state_per_layer"]) == (s.dim, s.depth, s.state_per_layer)
    assert {"expansion", "heads", "n_state", "backend", "spec_text", "kernel_hash"} <= set(info)
    if name in ("e88", "lstm", "gru"):
        assert info["spec_text"].startswith("#") and len(info["kernel_hash"]) == 16


def test_seed_decides_the_initialisation():
    a, b = build_model(TINY["e88"]), build_model(TINY["e88"])
    c = build_model(ModelConfig("e88", dim=16, depth=2, sets={"heads": 2, "n": 4}, seed=1))
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), n
    assert not torch.equal(a.embed.weight, c.embed.weight)
    w0, w1 = (m.layer.proj["0"].weight for m in a.mixers)
    assert not torch.equal(w0, w1)  # layers are initialised independently
    state = torch.random.get_rng_state()
    build_model(TINY["e88"])
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone


def test_residual_stream_is_fp32_under_bf16():
    model = build_model(TINY["e88"])
    seen = []
    model.mixers[1].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    idx = torch.randint(0, 256, (1, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(model(idx).float()).all()
    model.to(torch.bfloat16)  # bf16 weights: the norm runs in bf16
    assert model(idx).dtype == torch.bfloat16 and seen[-1] == torch.bfloat16


def test_llama_block_is_pre_norm_with_one_residual_each():
    """h = x + Attn(RMSNorm(x)); out = h + FFN(RMSNorm(h)): the §1 LM with two mixers per block."""
    cfg = ModelConfig("llama", dim=32, depth=1, sets={"head_dim": 8})
    model = build_model(cfg)
    assert [type(m) for m in model.mixers] == [blocks.Attention, blocks.SwiGLU]
    idx = torch.randint(0, 256, (2, 6))
    x = model.embed.weight[idx]
    attn, ffn = model.mixers
    h = x + attn(rms(x, model.norms[0].weight))
    out = h + ffn(rms(h, model.norms[1].weight))
    torch.testing.assert_close(model(idx), rms(out, model.norm_f.weight) @ model.embed.weight.T)
    assert ffn.gate.out_features == 256  # ceil((8/3)·32 / 256)·256


def test_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attn = blocks.Attention(16, 4).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    q, k, v = attn.qkv(x).view(2, 5, 3, 4, 4).permute(2, 0, 3, 1, 4)
    q, k = blocks.rope(q), blocks.rope(k)
    scores = (q @ k.transpose(-1, -2)) / 2.0 + torch.full((5, 5), float("-inf")).triu(1).double()
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 16)
    torch.testing.assert_close(attn(x), attn.proj(y))


def test_rope_scores_depend_only_on_the_offset():
    q = torch.randn(1, 1, 1, 8, dtype=torch.float64).expand(1, 1, 6, 8)
    k = torch.randn(1, 1, 1, 8, dtype=torch.float64).expand(1, 1, 6, 8)
    s = blocks.rope(q)[0, 0] @ blocks.rope(k)[0, 0].T  # [6, 6]
    for off in range(-5, 6):
        d = torch.diagonal(s, off)
        torch.testing.assert_close(d, d[:1].expand_as(d))
    assert not torch.allclose(torch.diagonal(s, 0)[:1], torch.diagonal(s, 1)[:1])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_torch_rnn_wrapper(kind):
    """W_out starts at zero (so the LM starts as embedding -> norm -> head); the research's initialisation:
    orthogonal cell weights, the LSTM's forget bias 1 in both of torch's biases."""
    model = build_model(TINY[f"nn-{kind}"])
    idx = torch.randint(0, 256, (1, 5))
    x = model.embed.weight[idx]
    torch.testing.assert_close(
        model(idx),
        F.layer_norm(x, (8,), model.norm_f.weight, model.norm_f.bias, NORM_EPS) @ model.embed.weight.T,
    )
    cell = model.mixers[0].cell
    assert isinstance(model.norms[0], nn.LayerNorm) and cell.hidden_size == 16
    for w in (cell.weight_ih_l0, cell.weight_hh_l0):  # [gates * 16, 16]: orthonormal columns
        torch.testing.assert_close(w.t() @ w, torch.eye(16), atol=1e-5, rtol=0)
    if kind == "lstm":
        for b in (cell.bias_ih_l0, cell.bias_hh_l0):
            assert torch.equal(b[16:32], torch.ones(16)) and not b[:16].any() and not b[32:].any()


def test_spec_lstm_matches_torch_lstm():
    """The lstm spec (reference cell) computes torch.nn.LSTM when given the same weights."""
    spec, ref = build_model(TINY["lstm"]).double(), build_model(TINY["nn-lstm"]).double()
    layer, mix = spec.mixers[0].layer, ref.mixers[0]
    with torch.no_grad():
        mix.w_in.weight.copy_(layer.proj["0"].weight)
        mix.cell.weight_ih_l0.copy_(layer.proj["1"].weight)
        mix.cell.bias_ih_l0.copy_(layer.proj["1"].bias)
        p = layer.params
        mix.cell.weight_hh_l0.copy_(torch.cat([p["W_hi"], p["W_hf"], p["W_hg"], p["W_ho"]]))
        mix.cell.bias_hh_l0.copy_(torch.cat([p["b_hi"], p["b_hf"], p["b_hg"], p["b_ho"]]))
        mix.w_out.weight.normal_()
        layer.out.weight.copy_(mix.w_out.weight)
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x)[0], mix(x))


@pytest.mark.parametrize(("model", "package"), [("mamba2", "mamba_ssm"), ("fla-gdn", "fla")])
def test_missing_package_is_a_user_error(model, package, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # importing it now fails, as without CUDA
    monkeypatch.setitem(sys.modules, "selective_scan_cuda", None)
    with pytest.raises(ArchdslError) as e:
        build_model(ModelConfig(model, dim=256, depth=1))
    assert "pip install 'archdsl[baselines]'" in str(e.value) and package.split("_")[0] in str(e.value)


def fake_module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    mod.__dict__.update(attrs)
    return mod


class Recorder(nn.Module):
    """Stands in for a package's layer: records its arguments and holds one weight."""

    calls: list = []

    def __init__(self, **kw):
        super().__init__()
        Recorder.calls.append(kw)
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.w


class TupleRecorder(Recorder):
    def forward(self, x):  # fla's layers return (output, attentions, cache)
        return x * self.w, None, None


def test_mamba2_glue_without_causal_conv1d(monkeypatch):
    """mamba_ssm without its CUDA scan and without causal-conv1d: the split path with a torch conv."""
    m2 = fake_module("mamba_ssm.modules.mamba2", Mamba2=Recorder, causal_conv1d_fn=None)
    monkeypatch.setitem(sys.modules, "mamba_ssm", fake_module("mamba_ssm"))
    monkeypatch.setitem(sys.modules, "mamba_ssm.modules", fake_module("mamba_ssm.modules"))
    monkeypatch.setitem(sys.modules, "mamba_ssm.modules.mamba2", m2)
    monkeypatch.setitem(sys.modules, "causal_conv1d", None)
    monkeypatch.setitem(sys.modules, "selective_scan_cuda", None)
    Recorder.calls = []
    with pytest.warns(UserWarning, match="budget solver counts"):  # the stand-in has other shapes
        model = build_model(ModelConfig("mamba2", depth=2))
    assert Recorder.calls[0] == {
        "d_model": 896,
        "d_state": 64,
        "d_conv": 4,
        "expand": 2,
        "headdim": 64,
        "use_mem_eff_path": False,
    }
    assert isinstance(sys.modules["selective_scan_cuda"], types.ModuleType)
    assert m2.causal_conv1d_fn is blocks.torch_causal_conv1d
    assert "split path" in model.info["backend"] and isinstance(model.norms[0], nn.LayerNorm)
    assert model(torch.randint(0, 256, (1, 3))).shape == (1, 3, 256)


def test_fla_gdn_glue(monkeypatch):
    monkeypatch.setitem(sys.modules, "fla", fake_module("fla"))
    monkeypatch.setitem(sys.modules, "fla.layers", fake_module("fla.layers", GatedDeltaNet=TupleRecorder))
    Recorder.calls = []
    with pytest.warns(UserWarning, match="budget solver counts"):
        model = build_model(ModelConfig("fla-gdn", depth=1))
    assert Recorder.calls[0] == {
        "hidden_size": 1024,
        "expand_v": 1,
        "head_dim": 128,
        "num_heads": 8,
        "use_gate": True,
        "use_short_conv": True,
        "conv_size": 4,
        "mode": "chunk",
    }
    assert isinstance(model.norms[0], nn.RMSNorm)
    assert model(torch.randint(0, 256, (1, 3))).shape == (1, 3, 256)


def test_torch_causal_conv1d_is_causal_depthwise():
    x, w, b = (
        torch.randn(2, 3, 7, dtype=torch.float64),
        torch.randn(3, 4, dtype=torch.float64),
        torch.randn(3),
    )
    y = blocks.torch_causal_conv1d(x, w, b.double(), activation="silu")
    pad = F.pad(x, (3, 0))
    want = torch.stack([(pad[..., t : t + 4] * w).sum(-1) for t in range(7)], -1) + b.double()[:, None]
    torch.testing.assert_close(y, F.silu(want))


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (ModelConfig("e99"), "neither a spec file"),
        (ModelConfig("llama", sets={"heads": 4}), "unknown setting 'heads' for baseline 'llama'"),
        (ModelConfig("llama", dim=100), "multiple of 64"),
        (ModelConfig("e88", dim=16, backend="cuda"), "unknown backend"),
        (ModelConfig("e88", depth=0), "depth must be at least 1"),
    ],
)
def test_bad_configs_are_user_errors(cfg, message):
    with pytest.raises(ArchdslError, match=message):
        build_model(cfg)


def test_the_lm_modules_import_each_other_without_a_cycle():
    """model, baselines, blocks, config, budget, zoo and generate form a DAG, lazy imports included."""
    lm = Path(__file__).resolve().parent.parent / "archdsl" / "lm"
    graph = {}
    for path in lm.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "archdsl.lm":
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("archdsl.lm."):
                names.add(node.module.split(".")[2])
        graph[path.stem] = names - {path.stem}
    done, active = set(), []

    def visit(m):
        assert m not in active, f"import cycle: {' -> '.join([*active[active.index(m) :], m])}"
        if m not in done:
            active.append(m)
            for n in graph.get(m, ()):
                visit(n)
            active.pop()
            done.add(m)

    for m in graph:
        visit(m)
    assert "baselines" not in graph["model"] and "model" not in graph["generate"]
