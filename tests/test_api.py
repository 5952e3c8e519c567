"""The Python API (docs/api.md): its example runs, its error messages are the real ones, parameters
carry the spec's names and old positional checkpoints still load, and ``import archdsl`` stays light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl.layer import RecurrentLayer

ROOT = Path(__file__).resolve().parent.parent
API = (ROOT / "docs" / "api.md").read_text()


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, re.S | re.M)


def test_the_example_in_docs_api_runs():
    """The first Python block of docs/api.md, 'A layer in your own model', run as a script."""
    example = python_blocks(API)[0]
    assert "archdsl.Layer(" in example and ".step(" in example
    assert len(example.strip().splitlines()) <= 30
    scope: dict = {"__name__": "docs_api_example"}
    exec(compile(example, "docs/api.md", "exec"), scope)
    block = scope["block"]
    assert block.mixer.proj["q_k_v"].weight.grad is not None  # the backward the example ran
    assert set(scope["state"]) == {"S"} and scope["state"]["S"].shape == (2, 2, 8, 8)


def test_the_error_lines_in_docs_api_are_the_real_messages():
    layer = archdsl.Layer("e88", dim=64, heads=2, n=8)
    cases = [
        torch.randn(2, 10, 32),
        torch.randn(10, 64),
        torch.randn(2, 10, 64, dtype=torch.float64),
    ]
    for x in cases:
        with pytest.raises(ValueError) as e:
            layer(x)
        assert str(e.value) in API, str(e.value)
    with pytest.raises(archdsl.LayerInputError) as e:
        layer(torch.randn(2, 10, 64), {"S": torch.zeros(2, 2, 8)})
    assert str(e.value) in API


def test_more_input_checks_name_what_is_wrong():
    layer = archdsl.Layer("gdn", preset="test")
    for bad, words in [
        ((torch.ones(2, 3, 6, dtype=torch.long),), "floating point"),
        ((torch.randn(2, 0, 6),), "no time steps"),
        (([[1.0] * 6],), "torch.Tensor"),
        ((torch.randn(2, 3, 6), {"T": torch.zeros(2)}), "unknown state 'T'"),
        ((torch.randn(2, 3, 6), torch.zeros(2)), "must be a dict"),
    ]:
        with pytest.raises(archdsl.LayerInputError, match=words):
            layer(*bad)
    with pytest.raises(archdsl.LayerInputError, match=r"\[batch, 6\]"):
        layer.step(torch.randn(2, 3, 6))


def test_layer_from_a_preset_from_keywords_and_from_text():
    a = archdsl.Layer("e88", preset="demo", seed=3)
    assert isinstance(a, RecurrentLayer) and a.ir.hypers["heads"] == 4
    b = archdsl.Layer("e88", preset="demo", heads=2, seed=3)  # keywords override the preset
    assert b.ir.hypers["heads"] == 2 and b.ir.dim == a.ir.dim
    text = (ROOT / "specs" / "gdn.rnn").read_text()
    c = archdsl.Layer(text, preset="test", seed=0)
    d = archdsl.Layer(str(ROOT / "specs" / "gdn.rnn"), preset="test", seed=0)
    assert all(torch.equal(p, q) for p, q in zip(c.parameters(), d.parameters()))
    with pytest.raises(archdsl.ArchdslError, match="unknown setting 'headz'"):
        archdsl.Layer("e88", headz=2)


def test_parameters_are_named_after_the_spec():
    layer = archdsl.Layer("gdn", preset="test", seed=0)
    names = list(dict(layer.named_parameters()))
    assert names == [
        "proj.q_k_v_g.weight",
        "proj.a_b.weight",
        "params.A_log",
        "params.dt_bias",
        "params.norm_w",
        "params.conv_q",  # the short causal convolutions, [h, i, c]
        "params.conv_k",
        "params.conv_v",
        "out.weight",
    ]
    q, k = layer.projection_weight("q"), layer.projection_weight("k")
    w = layer.proj["q_k_v_g"].weight
    assert q.shape == (2, 3, 6) and torch.equal(k.reshape(6, 6), w[6:12])
    assert q.data_ptr() == w.data_ptr()  # a view: writes reach the weight
    with pytest.raises(KeyError, match="'z' is not a projection output"):
        layer.projection_weight("z")


def test_checkpoints_with_positional_names_still_load():
    """proj.0 / proj_sn.0 (the names before) map onto the spec's names, spectral norms included."""
    for spec, kw in [("gdn", {"preset": "test"}), ("e70", {"dim": 8, "n": 4})]:
        old = archdsl.Layer(spec, seed=1, **kw)
        keys = old.proj_keys
        renamed = {}
        for name, v in old.state_dict().items():
            for k, key in enumerate(keys):
                for table in ("proj", "proj_sn"):
                    name = name.replace(f"{table}.{key}.", f"{table}.{k}.")
            renamed[name] = v
        assert any(n.startswith("proj.0.") for n in renamed)
        new = archdsl.Layer(spec, seed=2, **kw)
        new.load_state_dict(renamed)  # strict: every key matched
        for (n, a), b in zip(old.state_dict().items(), new.state_dict().values()):
            assert torch.equal(a, b), n
    lm = archdsl.LM("e88", dim=16, heads=2, n=4, depth=2)
    sd = {
        k.replace("proj.q_k_v.", "proj.0.").replace("proj.a.", "proj.1."): v
        for k, v in lm.state_dict().items()
    }
    assert "mixers.1.layer.proj.0.weight" in sd
    archdsl.LM("e88", dim=16, heads=2, n=4, depth=2, seed=5).load_state_dict(sd)


def test_lm_check_and_compile_from_the_top_level():
    lm = archdsl.LM("e88", dim=16, heads=2, n=4, depth=2)
    assert isinstance(lm, archdsl.LanguageModel)
    assert lm(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, 256)
    assert "E88_d12h32" in archdsl.check("e88").presets
    cc = archdsl.compile("gdn", preset="test", strategy="loop")
    assert cc.strategy == "loop" and Path(cc.path).is_file()
    with pytest.raises(archdsl.ArchdslError, match="did you mean 'steps'"):
        archdsl.fit("e88", stepz=3)


def test_import_archdsl_does_not_load_torch():
    code = (
        "import sys, archdsl; assert 'torch' not in sys.modules; archdsl.Layer; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
