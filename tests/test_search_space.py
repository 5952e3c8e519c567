"""The search space, the study settings, the verdict on seed noise and the report (no training here)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from archdsl.search import report, results  # noqa: E402
from archdsl.search import study as st  # noqa: E402
from archdsl.search.repro import job, model_config, train_command, train_config  # noqa: E402
from archdsl.search.space import Candidate, Space, parse_range  # noqa: E402

from archdsl.cli import main  # noqa: E402
from archdsl.config import apply_overrides  # noqa: E402
from archdsl.errors import ArchdslError  # noqa: E402
from archdsl.lm.config import ModelConfig  # noqa: E402
from archdsl.train.config import TrainConfig  # noqa: E402


def sample(space: Space, n: int = 20):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((space.sample(trial), trial.params))
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize(
    "text, kind, low, high, log, values",
    [
        ("4:64", "int", 4, 64, False, None),
        ("1e-4:3e-3:log", "float", 1e-4, 3e-3, True, None),
        ("0.5:2", "float", 0.5, 2, False, None),
        ("16,32,64", "categorical", None, None, False, (16, 32, 64)),
        ("silu, none", "categorical", None, None, False, ("silu", "none")),
        ("32", "categorical", None, None, False, (32,)),
    ],
)
def test_parse_range(text, kind, low, high, log, values):
    d = parse_range("x", text)
    assert (d.kind, d.low, d.high, d.log, d.values) == (kind, low, high, log, values)


@pytest.mark.parametrize(
    "text, message",
    [
        ("8:4", "empty range"),
        ("0:1:log", "positive lower bound"),
        ("a:b", "must be numbers"),
        ("1:2:lin", "LOW:HIGH:log"),
        ("16,16", "listed twice"),
    ],
)
def test_parse_range_errors(text, message):
    with pytest.raises(ArchdslError, match=message):
        parse_range("x", text)


def test_space_comes_from_the_spec_search_block():
    space = Space(["e88"])
    dims = space.models[0].dims
    assert dims["heads"].kind == "int" and (dims["heads"].low, dims["heads"].high) == (4, 128)
    assert dims["n"].values == (16, 24, 32, 48, 64)
    assert set(dims["gate"].values) == {"none", "silu", "sigmoid"}
    for cand, _ in sample(space):
        assert cand.model == "e88" and 4 <= cand.sets["heads"] <= 128 and cand.sets["n"] in dims["n"].values
        assert cand.depth == 20  # not searched: the default


def test_flags_narrow_widen_and_fix():
    over = {
        "heads": parse_range("heads", "2:3"),
        "n": parse_range("n", "12,20"),
        "depth": parse_range("depth", "1:2"),
        "lr": parse_range("lr", "1e-4:1e-3:log"),
    }
    space = Space(["e88"], over, {"gate": "silu"})
    assert "gate" not in space.models[0].dims
    for cand, params in sample(space):
        assert 2 <= cand.sets["heads"] <= 3 and cand.sets["n"] in (12, 20)  # 12, 20: wider than the spec
        assert 1 <= cand.depth <= 2 and 1e-4 <= cand.lr <= 1e-3
        assert cand.sets["gate"] == "silu" and "gate" not in params


@pytest.mark.parametrize(
    "over, fixed, message",
    [
        ({"heds": "4:8"}, {}, "did you mean 'heads'"),
        ({"gate": "none,tanh"}, {}, "takes values from"),
        ({"gate": "1:2"}, {}, "takes values from"),
        ({"heads": "a,b"}, {}, "is a number"),
        ({"dim": "64:128"}, {}, "solved from --budget"),
        ({}, {"depht": 3}, "did you mean 'depth'"),
    ],
)
def test_space_errors(over, fixed, message):
    with pytest.raises(ArchdslError) as e:
        Space(["e88"], {k: parse_range(k, v) for k, v in over.items()}, fixed)
    assert message in str(e.value)


def test_several_models_are_a_categorical_choice():
    space = Space(["e88", "llama"], {"depth": parse_range("depth", "2:4")})
    seen = set()
    for cand, params in sample(space, 30):
        seen.add(cand.model)
        assert params["model"] == cand.model and 2 <= params["depth"] <= 4  # shared knob: one name
        if cand.model == "e88":
            assert "e88.heads" in params and cand.sets["heads"] == params["e88.heads"]
        else:
            assert cand.sets == {} and not any(k.startswith("e88.") for k in params)
    assert seen == {"e88", "llama"}


def test_unknown_model_is_an_error():
    with pytest.raises(ArchdslError, match="neither a spec file"):
        Space(["e99"])


def test_train_command_is_exact(tmp_path):
    """A trial's configs -> its job items -> the trial's configs; its reproduce command, read by the
    trainer's own CLI, gives the same configs back (but where the trial kept its files)."""
    settings = st.Settings(
        ["e88"], 250_000, 10.0, 4, data=["a.txt", "b,c.txt"], batch=16, eval_bytes=4096, backend="triton"
    )
    cand = Candidate("e88", {"heads": 8, "gate": "none"}, depth=3, lr=0.0003, dim=256)
    model, train = model_config(cand, settings, 2), train_config(cand, settings, tmp_path, 2)
    spec = job(model, train, settings, report=False)
    assert apply_overrides(ModelConfig(), spec["model"]) == model
    assert apply_overrides(TrainConfig(), spec["train"]) == train
    cmd = train_command(model, train)
    assert cmd == (
        "archdsl train e88 --set heads=8 --set gate=none --dim 256 --depth 3 --backend triton "
        "--minutes 10.0 --batch 16 --eval-bytes 4096 --seed 2 --data a.txt b,c.txt"
    )
    model_cfg, cfg = parse_train_command(cmd)  # the trainer's own CLI reads it back to the same configs
    assert model_cfg == dataclasses.replace(model, params=None)  # the solved width stands for the budget
    assert dataclasses.replace(cfg, out=train.out, progress=False, checkpoint=False) == train
    assert train_command(dataclasses.asdict(model), train) == cmd  # from the study's record too


def parse_train_command(cmd: str):
    train_cmd = pytest.importorskip("archdsl.train.cli")
    argv = shlex.split(cmd)
    assert argv[:2] == ["archdsl", "train"]
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    return train_cmd.configs(parser.parse_args(argv[2:]))


# ---- the verdict on seed noise -------------------------------------------------------------------
class T:
    def __init__(self, number):
        self.number = number


@pytest.mark.parametrize(
    "a, b, verdict",
    [
        ([1.00, 1.01, 0.99], [1.20, 1.21, 1.19], "wins"),
        ([1.00, 1.10, 0.90], [1.02, 1.12, 0.92], "within the seed"),
        ([1.0], [1.1], "noise is unknown"),
        # two seeds each: a lead of 2.5 standard errors passed the old two-standard-error rule, but
        # Student's t at 2 degrees of freedom needs 2.92
        ([1.00, 1.02], [1.035, 1.055], "within the seed"),
    ],
)
def test_verdict(a, b, verdict):
    text = results.verdict([(T(7), results.SeedStats(b, [])), (T(3), results.SeedStats(a, []))])
    assert verdict in text and text.startswith("Trial 3")


def test_verdict_leaves_out_the_search_score():
    """The winner's search score (the best of many noisy draws) would pull its mean down."""
    w = results.SeedStats([1.10, 1.12], [], search=0.50)
    r = results.SeedStats([1.09, 1.11], [], search=1.30)
    assert w.mean == pytest.approx(1.11) and r.mean == pytest.approx(1.10)
    assert results.verdict([(T(3), w), (T(7), r)]).startswith("Trial 7 has the best mean")


# ---- the CLI refuses what it cannot do -----------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--budget", "200K", "--multi", "speed"], "unknown --multi objective"),
        (["--budget", "200K", "--multi", "state", "--sampler", "cmaes"], "CMA-ES is single-objective"),
        (["--minutes", "1"], "--budget is required"),
        (["--budget", "2X"], "cannot read a parameter count"),
        (["--budget", "200K", "--heads", "8:4"], "empty range"),
        (["--resume"], "no study"),
        (["--budget", "200K", "--workers", "0"], "--workers: expected a positive integer, found '0'"),
    ],
)
def test_search_errors(argv, message, tmp_path, capsys):
    assert main(["search", *argv, "--runs", str(tmp_path), "--study", "s", "--quiet"]) == 2
    assert message in capsys.readouterr().err


def make_study(tmp_path: Path, **kw):
    settings = st.Settings(models=["e88"], budget=200_000, minutes=0.1, trials=4, **kw)
    storage = st.open_storage("s", None, tmp_path)
    return st.create("s", storage, settings), settings


def test_existing_study_needs_resume_and_keeps_its_settings(tmp_path, capsys):
    make_study(tmp_path)
    assert main(["search", "--budget", "200K", "--runs", str(tmp_path), "--study", "s"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["search", "--resume", "--heads", "4:8", "--runs", str(tmp_path), "--study", "s"]) == 2
    err = capsys.readouterr().err
    assert "keeps its settings; these flags differ from them: --heads" in err


# ---- the report from a study's storage -----------------------------------------------------------
def add(study, number_value, heads, status="complete", **attrs):
    dist = {"heads": optuna.distributions.IntDistribution(1, 8)}
    state = {"complete": optuna.trial.TrialState.COMPLETE, "failed": optuna.trial.TrialState.FAIL}[status]
    ua = {
        "params": 200_100,
        "model_config": {"model": "e88", "dim": 64, "depth": 2, "sets": {"heads": heads}},
        "command": f"archdsl train e88 --set heads={heads} --dim 64",
        "tokens_per_s": 1000.0,
        "curve": [[0.5, 1, 5.0], [1.0, 2, 4.0 + heads / 10]],
        **attrs,
    }
    study.add_trial(
        optuna.create_trial(
            state=state, value=number_value, params={"heads": heads}, distributions=dist, user_attrs=ua
        )
    )


def test_report_from_storage(tmp_path, capsys):
    study, _ = make_study(tmp_path, top_k=2)
    for heads, value in ((2, 1.5), (3, 1.2), (5, 1.9), (6, 1.3)):
        add(study, value, heads)
    add(study, None, 7, status="failed", fail_reason="out of memory: CUDA out of memory")
    study.set_user_attr("seed_run:1:1", {"seed": 1, "status": "ok", "values": [1.25]})
    study.set_user_attr("seed_run:3:1", {"seed": 1, "status": "failed", "reason": "non-finite loss: step 3"})
    args = argparse.Namespace(study="s", storage=None, runs=str(tmp_path), dest=None)
    assert report.run(args) == 0
    md = (tmp_path / "s" / "report.md").read_text()
    html = (tmp_path / "s" / "report.html").read_text()
    best = md[md.index("## Best configurations") : md.index("### Commands")]
    assert best.index("| 1 | 1 | e88 | heads=3") < best.index("| 2 | 3 | e88 | heads=6")  # sorted by value
    assert "1.2500 (1 seed)" in best and "trial 3 seed 1: non-finite loss" in best
    assert "archdsl train e88 --set heads=3 --dim 64" in md and "out of memory" in md
    assert "200,100 (+0.05%)" in md
    assert "## Parameter importances" in md and ("heads" in md.split("## Parameter importances")[1])
    assert html.count("data:image/png;base64,") >= 3 and "<script" not in html and 'src="http' not in html
    assert results.seed_stats(study, study.trials[1]).values == [1.25]  # the search's 1.2 is left out


def test_report_of_a_multi_objective_study(tmp_path):
    study, s = make_study(tmp_path, multi=["tokens_per_s"])
    dist = {"heads": optuna.distributions.IntDistribution(1, 8)}
    for heads, bpb, speed in ((1, 2.0, 900.0), (2, 1.8, 700.0), (3, 1.9, 600.0), (4, 2.1, 1000.0)):
        ua = {
            "params": 199_000,
            "model_config": {"model": "e88", "dim": 64, "depth": 2},
            "command": "archdsl train",
        }
        study.add_trial(
            optuna.create_trial(
                values=[bpb, speed], params={"heads": heads}, distributions=dist, user_attrs=ua
            )
        )
    md, page = report.write_report(study, tmp_path / "out")
    front = md.read_text().split("## Pareto front")[1].split("###")[0]
    assert {"| 1 | 1 |", "| 2 | 0 |", "| 3 | 3 |"} <= {line[:9] for line in front.splitlines()}  # by bpb
    assert "| 2 |" not in [line[4:9] for line in front.splitlines()]  # trial 2: dominated by trial 1
    assert (tmp_path / "out" / "pareto-tokens_per_s.png").stat().st_size > 0
    assert "over seeds" not in front


def test_workers_get_a_gpu_or_a_share_of_the_cores():
    from archdsl.search.pool import Slot, slot_env

    assert slot_env(Slot(3, "5"), 8, {})["CUDA_VISIBLE_DEVICES"] == "5"
    env = slot_env(Slot(0, None), 2, {})
    assert "CUDA_VISIBLE_DEVICES" not in env and int(env["OMP_NUM_THREADS"]) >= 1


def test_a_trial_starts_only_if_it_ends_before_the_deadline(tmp_path):
    import time

    from archdsl.search.worker import fits

    study, s = make_study(tmp_path)  # 0.1-minute trials, none complete yet: 6 s expected
    assert fits(None, study, s) and fits(time.time() + 10, study, s)
    assert not fits(time.time() + 3, study, s)


def test_gpu_list():
    from archdsl.search.cli import gpu_list

    assert gpu_list("0, 1,3") == ["0", "1", "3"] and gpu_list(None) is None
    with pytest.raises(ArchdslError, match="distinct ids"):
        gpu_list("0,0")


def test_report_unknown_study(tmp_path, capsys):
    args = argparse.Namespace(study="nope", storage=None, runs=str(tmp_path), dest=None)
    with pytest.raises(ArchdslError, match="no study 'nope'"):
        report.run(args)
