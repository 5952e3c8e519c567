"""A real search on the CPU: E88 at a 200K-parameter budget, two workers, the team corpus.

One invalid configuration is queued on purpose (heads = 0): it must be recorded as failed with its
reason while the study goes on; every trial's recorded count must be within 1% of the budget;
``--resume`` must add trials to the same study; the top-k re-runs and the report must be written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402
from test_search_space import parse_train_command  # noqa: E402

from archdsl.budget import sizes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "corpus-val.txt.xz"
BUDGET = 200_000


def archdsl(command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "archdsl.cli", *command.split()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def load(runs: Path):
    from archdsl.search import study as st

    return optuna.load_study(study_name="cpu", storage=st.open_storage("cpu", None, runs))


@pytest.mark.slow
@pytest.mark.xdist_group("search")
def test_cpu_search_invalid_choice_resume_report(tmp_path):
    if not CORPUS.exists():
        pytest.skip(f"the team corpus is not at {CORPUS}")
    runs = tmp_path / "runs"
    common = f"--out {runs} --study cpu --quiet"
    space = "--heads 1:3 --n 8,16 --depth 1:2 --set gate=none --enqueue heads=0"  # heads=0: invalid
    trainer = f"--data {CORPUS} --batch 4 --seq 16 --eval-bytes 128 --device cpu --minutes 0.02"
    r = archdsl(
        f"search e88 --budget 200K --trials 5 --workers 2 --seeds 1 --top-k 2 {space} {trainer} {common}"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(runs)
    trials = study.get_trials()
    ended = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    assert len(ended) >= 5
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials

    invalid = [t for t in trials if t.params.get("heads") == 0]
    assert len(invalid) == 1 and invalid[0].state == TrialState.FAIL
    assert "invalid configuration" in invalid[0].user_attrs["fail_reason"]
    assert "heads 0" in invalid[0].user_attrs["fail_reason"]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 3
    for t in trials:
        if "params" in t.user_attrs:  # every trial that got as far as its count is at the budget
            assert abs(t.user_attrs["params"] - BUDGET) <= 0.01 * BUDGET, t.user_attrs
    for t in complete:
        assert t.values[0] == pytest.approx(t.user_attrs["val_bpb"])
        assert sorted(t.intermediate_values) == [25, 50, 75]  # held-out bpb reported for the pruner
        assert t.user_attrs["curve"] and t.user_attrs["command"].startswith("archdsl train e88 ")
        model_cfg, cfg = parse_train_command(t.user_attrs["command"])  # reproduces exactly this trial
        assert sizes(model_cfg).params == t.user_attrs["params"] and cfg.lr == t.user_attrs["lr"]
        assert (cfg.minutes, cfg.batch, cfg.seq, cfg.data) == (0.02, 4, 16, [str(CORPUS)])

    best = sorted(complete, key=lambda t: t.values[0])[:2]
    for t in best:  # the top-2 re-trained with one more seed
        rec = study.user_attrs[f"seed_run:{t.number}:1"]
        assert rec["status"] == "ok" and rec["values"][0] > 0

    html = (runs / "cpu" / "report.html").read_text()
    md = (runs / "cpu" / "report.md").read_text()
    assert "data:image/png;base64," in html and 'src="http' not in html
    assert "heads 0" in html and "archdsl train e88" in md and "over seeds" in md
    assert (runs / "cpu" / "curves.png").stat().st_size > 0

    first = {t.number: t.values for t in complete}
    r = archdsl(f"search --resume --trials 1 --seeds 0 {common}")
    assert r.returncode == 0, r.stderr[-3000:]
    again = load(runs).get_trials()
    ended_again = [t for t in again if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    assert len(ended_again) >= len(ended) + 1  # resumed: more trials in the same study
    for number, values in first.items():
        assert again[number].values == values

    (runs / "cpu" / "report.md").unlink()
    r = archdsl(f"report {runs / 'cpu'}")  # regenerated from the storage alone
    assert r.returncode == 0, r.stderr
    last = max(t.number for t in ended_again)
    assert f"| {last} | " in (runs / "cpu" / "report.md").read_text()
