"""``archdsl check``: text and JSON output, --preset/--set/--depth, and clean failures."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from archdsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
E88 = str(ROOT / "specs" / "e88.rnn")
TINY = (
    "hyper dim = 8\nhyper heads = 2\naxis h = heads\nproject x -> u[h], g[h]\nstate s[h]\n"
    "s' = tanh(s + u)\ny = s' * g\noutput y\n"
)


def check_json(capsys, *args) -> dict:
    assert main(["check", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def e88_layer_params(dim: int, heads: int, n: int, gate: bool = False) -> int:
    """variants.md §4 at expansion 1: 4DHn + DH + 2H, plus DHn for the output gate's projection."""
    return (5 if gate else 4) * dim * heads * n + dim * heads + 2 * heads


def test_json_reports_counts_states_split_and_search_space(capsys):
    info = check_json(capsys, E88)
    for key in ("params", "layer_params", "state_per_layer", "search_space", "per_token", "recurrent"):
        assert key in info
    assert info["layer_params"] == e88_layer_params(768, 12, 32)
    assert info["state_per_layer"] == 12 * 32 * 32
    assert info["states"] == {"S": ["h", "i", "j"]}
    # the decay and the normalised keys are per token (parallel over time); delta reads the state
    assert {"k", "kh", "q", "qh", "alpha"} <= set(info["per_token"])
    assert {"delta", "o", "y"} <= set(info["recurrent"])
    assert not set(info["per_token"]) & set(info["recurrent"])
    assert set(info["search_space"]) == {"heads", "n", "nonlin", "gate"}
    assert info["search_space"]["nonlin"] == "{tanh, identity}"


def test_e88_d12h32_matches_the_research_count(capsys):
    info = check_json(capsys, E88, "--preset", "E88_d12h32", "--depth", "20")
    assert info["hypers"]["dim"] == 3200 and info["sizes"]["h"] == 12
    assert abs(info["params"] - 99_959_520) / 99_959_520 < 1e-4, info["params"]


def test_depth_scales_only_the_per_layer_part(capsys):
    a = check_json(capsys, E88, "--preset", "demo", "--depth", "4")
    b = check_json(capsys, E88, "--preset", "demo", "--depth", "7")
    assert a["layer_params"] == b["layer_params"]
    assert b["params"] - a["params"] == 3 * (a["dim"] + a["layer_params"])  # norm weight + mixer per layer
    assert a["params"] == 256 * 128 + 128 + 4 * (128 + a["layer_params"])


def test_set_overrides_hypers_and_choices(capsys):
    info = check_json(capsys, E88, "--set", "heads=3", "--set", "n=8", "--set", "gate=silu")
    assert (info["hypers"]["heads"], info["hypers"]["n"], info["choices"]["gate"]) == (3, 8, "silu")
    assert info["sizes"] == {"h": 3, "i": 8, "j": 8}
    assert info["layer_params"] == e88_layer_params(768, 3, 8, gate=True)
    assert info["state_per_layer"] == 3 * 8 * 8


def test_set_applies_after_the_preset(capsys):
    info = check_json(capsys, E88, "--preset", "E88_h8n64", "--set", "heads=4")
    assert info["hypers"]["heads"] == 4 and info["hypers"]["dim"] == 2432  # heads from --set, dim from preset
    assert info["choices"]["gate"] == "sigmoid"


def test_text_output(capsys):
    assert main(["check", E88, "--preset", "demo"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"e88\.rnn: ok \(\d+ configurations checked\)", out)
    layer = e88_layer_params(128, 4, 16)
    assert f"layer params   {layer:,} = " in out
    assert f"LM params      {256 * 128 + 128 + 20 * (128 + layer):,} (depth 20, dim 128)" in out
    assert "state/layer    1,024 floats (S[h, i, j])" in out
    assert re.search(r"per-token .*\bkh\b", out) and re.search(r"recurrent .*\bdelta\b", out)
    assert "search         heads in 4 .. 128" in out


def test_formula_agrees_with_the_count(capsys):
    """The printed formula, evaluated at the configuration's hypers, gives the printed count."""
    info = check_json(capsys, E88, "--preset", "E88_h8n64")
    value = eval(info["layer_params_formula"].replace("^", "**"), {}, dict(info["hypers"]))  # noqa: S307
    assert value == info["layer_params"]


def test_several_specs_and_a_bundled_name(capsys, tmp_path):
    tiny = tmp_path / "tiny.rnn"
    tiny.write_text(TINY)
    assert main(["check", str(tiny), "e88"]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok (") == 2
    assert "tiny.rnn: ok (1 configuration checked)" in out
    assert "layer params   48 = 3*dim*heads" in out  # u and g: 2 * dim*heads; the output: heads*dim


def test_warnings_go_to_stderr_and_do_not_fail(capsys, tmp_path):
    spec = tmp_path / "w.rnn"
    spec.write_text(TINY.replace("s' = tanh(s + u)", "s' = tanh(u)"))
    assert main(["check", str(spec)]) == 0
    captured = capsys.readouterr()
    assert "w.rnn:6:1: warning: the update of state 's' does not depend on 's'" in captured.err
    assert ": ok (" in captured.out


BAD = {
    "syntax": ("hyper dim = 8 4\n", [], r"^bad\.rnn:1:15: error: unexpected '4' after an expression"),
    "checker": (
        TINY.replace("tanh(s + u)", "tahn(s + u)"),
        [],
        r"^bad\.rnn:6:6: error: unknown function 'tahn'",
    ),
    "preset": (TINY, ["--preset", "big"], r"^error: unknown preset 'big'"),
    "set": (TINY, ["--set", "heads=1.5"], r"^bad\.rnn:3:1: error: axis 'h' has size 1\.5"),
    "set_key": (
        TINY,
        ["--set", "hedas=4"],
        r"^error: --set hedas=4: unknown setting 'hedas'.*\n.*did you mean",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_a_located_message(case, tmp_path):
    """Through the installed entry point, as a user sees it: status 2, the message, no traceback."""
    text, args, pattern = BAD[case]
    (tmp_path / "bad.rnn").write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "archdsl.cli", "check", "bad.rnn", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert re.search(pattern, proc.stderr, re.M), proc.stderr
    assert proc.stdout == ""


def test_one_bad_spec_fails_the_run_but_the_others_are_checked(capsys, tmp_path):
    (tmp_path / "bad.rnn").write_text("hyper dim =\n")
    assert main(["check", str(tmp_path / "bad.rnn"), E88]) == 2
    captured = capsys.readouterr()
    assert "bad.rnn:1:12: error: unexpected end of file after '='" in captured.err
    assert "e88.rnn: ok (" in captured.out


def test_json_error_output_is_a_message_not_json(capsys, tmp_path):
    (tmp_path / "bad.rnn").write_text(TINY + "param w[h] = zeros()\n")
    assert main(["check", str(tmp_path / "bad.rnn"), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "bad.rnn:9:1: error: parameter 'w' is never used" in captured.err


def test_a_hyper_default_follows_the_hypers_it_uses(capsys, tmp_path):
    spec = tmp_path / "derived.rnn"
    spec.write_text(TINY.replace("hyper heads = 2", "hyper heads = dim / 4") + "preset wide { dim = 32 }\n")
    assert check_json(capsys, str(spec))["sizes"] == {"h": 2}
    assert check_json(capsys, str(spec), "--preset", "wide")["sizes"] == {"h": 8}  # heads = 32 / 4
    assert check_json(capsys, str(spec), "--preset", "wide", "--set", "heads=3")["sizes"] == {"h": 3}


def test_a_range_may_be_written_without_spaces(capsys, tmp_path):
    spec = tmp_path / "r.rnn"
    spec.write_text(TINY + "search { heads in 2..8, lr in 0.0001..0.01 log }\n")
    assert check_json(capsys, str(spec))["search_space"] == {"heads": "2 .. 8", "lr": "0.0001 .. 0.01 log"}


def test_a_preset_names_its_depth():
    """E88_b56n32 is a depth-32 configuration: without --depth the LM count is at depth 32."""
    from archdsl.lang.check_cmd import summary
    from archdsl.lm.config import ModelConfig

    info = summary("specs/e88.rnn", "E88_b56n32", {}, None)
    assert info["depth"] == 32
    assert summary("specs/e88.rnn", "E88_b56n32", {}, 20)["depth"] == 20
    assert summary("specs/e88.rnn", "E88_d12h32", {}, None)["depth"] == 20
    assert ModelConfig("e88", preset="E88_b56n32").depth == 32
    assert ModelConfig("e88", preset="E88_b56n32", depth=4).depth == 4
