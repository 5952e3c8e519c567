"""benchmarks/same_init.py: the library LM gets every weight of the spec's LM, and the table's gaps
are the curves' differences. On the CPU a spec stands in for the library (the map's rows name the
spec layer's own parameters), so the copy is checked without fla."""

import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import same_init  # noqa: E402

from archdsl.lm.config import ModelConfig  # noqa: E402
from archdsl.lm.zoo import build_model  # noqa: E402

#: gdn's layer into gdn's layer: one row per parameter of the spec layer, in the oracle map's form
ROWS = [
    ("proj.q_k_v_g.weight", ["q", "k", "v", "g"]), ("proj.a_b.weight", ["a", "b"]),
    ("params.A_log", ["A_log"]), ("params.dt_bias", ["dt_bias"]), ("params.norm_w", ["norm_w"]),
    ("params.conv_q", ["conv_q"]), ("params.conv_k", ["conv_k"]), ("params.conv_v", ["conv_v"]),
    ("out.weight", ["out"]),
]  # fmt: skip


def tiny(seed: int):
    return build_model(ModelConfig(model="gdn", preset="test", depth=2, seed=seed))


def test_copy_gives_the_same_model():
    a, b = tiny(0), tiny(1)
    with torch.no_grad():
        b.norms[0].weight.mul_(2.0)  # a norm that is not copied would show
    x = torch.randint(0, 256, (2, 9))
    assert (a(x) - b(x)).abs().max() > 1e-3
    same_init.copy_lm(a, b, ROWS)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_a_missing_row_is_refused():
    with pytest.raises(AssertionError, match="without a row"):
        same_init.copy_lm(tiny(0), tiny(1), ROWS[:-1])


def test_gaps_are_the_mean_differences_in_the_window():
    a = [[10, 3.0], [20, 2.5], [30, 2.0]]
    b = [[10, 2.0], [20, 2.0], [30, 2.5]]
    assert same_init.mean_gap(a, b, 20, 30) == pytest.approx(0.0)
    assert same_init.mean_gap(a, b, 10, 20) == pytest.approx(0.75)
    assert same_init.mean_gap(a, b, 40, 50) is None


def test_one_seed_trains_three_models_on_the_same_batches(tmp_path, monkeypatch):
    spec_cfg = dict(model="gdn", preset="test", depth=1)
    monkeypatch.setattr(
        same_init, "library_config", lambda args, dim, seed: ModelConfig(**spec_cfg, seed=seed + 1)
    )
    monkeypatch.setitem(same_init.LAYERS, "gdn", ("gdn", "test", None, ROWS))
    args = Namespace(
        spec="gdn", preset="test", depth=1, backend="reference", steps=4, batch=2, seq=16, data=[],
        val=None, eval_bytes=256, log_every=2, map="gdn", library="gdn", at=[2, 4], window=[2, 4],
    )  # fmt: skip
    runs = same_init.one_seed(args, 0, tmp_path)
    curves = {name: run["curve"] for name, run in runs.items()}
    assert [s for s, _ in curves["spec"]] == [2, 4]
    # the same weights and batches on the same code: the same losses; another init: others
    assert curves["spec"] == curves["library, spec's weights"]
    assert curves["spec"] != curves["library"]
    table = same_init.markdown({"environment": {"versions": {}, "device": "cpu", "date": "d"},
                                "commit": "c", "command": "x", "seeds": {0: runs}}, args)  # fmt: skip
    gaps = [cell.strip() for cell in table.splitlines()[-1].split("|")[2:5]]
    assert gaps[1] == "+0.0000"  # kernels: the spec against the library with its weights
    assert gaps[0] == gaps[2] != "+0.0000"  # the bench's pair differs by the init alone
