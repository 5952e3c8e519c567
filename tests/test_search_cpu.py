"""A real search on the CPU: E88 at a 200K-parameter budget, two workers, the test corpus.

One invalid configuration is queued on purpose (heads = 0): it must be recorded as failed with its
reason while the study goes on; every trial's recorded count must be within 1% of the budget;
``--resume`` must add trials to the same study (a trial stopped by SIGTERM runs again on the next
``--resume``); the top-k re-runs and the report must be written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402
from test_search_space import parse_train_command  # noqa: E402

from archdsl.lm.budget import sizes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus-val.txt.xz"
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
    runs = tmp_path / "runs"
    common = f"--runs {runs} --study cpu --quiet"
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
        data = [str(Path(d).resolve()) for d in cfg.data]
        assert (cfg.minutes, cfg.batch, cfg.seq, data) == (0.02, 4, 16, [str(CORPUS.resolve())])

    best = sorted(complete, key=lambda t: t.values[0])[:2]
    for t in best:  # the top-2 re-trained with one more seed
        rec = study.user_attrs[f"seed_run:{t.number}:1"]
        assert rec["status"] == "ok" and rec["values"][0] > 0

    html = (runs / "cpu" / "report.html").read_text()
    md = (runs / "cpu" / "report.md").read_text()
    assert "data:image/png;base64," in html and 'src="http' not in html
    assert "heads 0" in html and "archdsl train e88" in md and "over seeds" in md
    assert (runs / "cpu" / "curves.png").stat().st_size > 0

    # --resume adds a trial; stopped (SIGTERM) while it trains, the trial is queued again, not counted
    first = {t.number: t.values for t in complete}
    stopped = subprocess.Popen(
        [sys.executable, "-m", "archdsl.cli", *f"search --resume --trials 1 {common}".split()],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stderr=subprocess.DEVNULL,
    )
    try:
        victim = wait_for_training(runs, set(first) | {t.number for t in ended})
    finally:
        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(timeout=120) == 130
    cut = load(runs).get_trials()[victim]
    assert (
        cut.state == TrialState.FAIL
        and cut.user_attrs["stale"]
        and "interrupted" in cut.user_attrs["fail_reason"]
    )

    r = archdsl(f"search --resume --seeds 0 {common}")  # no --trials: on to the target, the retry first
    assert r.returncode == 0, r.stderr[-3000:]
    again = load(runs).get_trials()
    retry = [t for t in again if t.user_attrs.get("retry_of") == victim]
    assert len(retry) == 1 and retry[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry[0].params == cut.params
    ended_again = [t for t in again if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    counted = [t for t in ended_again if not t.user_attrs.get("stale")]
    assert len(counted) == len(ended) + 1  # resumed: one more trial in the same study
    for number, values in first.items():
        assert again[number].values == values

    (runs / "cpu" / "report.md").unlink()
    r = archdsl(f"report {runs / 'cpu'}")  # regenerated from the storage alone
    assert r.returncode == 0, r.stderr
    last = max(t.number for t in ended_again)
    report = (runs / "cpu" / "report.md").read_text()
    assert f"| {last} | " in report and f"| {victim} | retried |" in report


def wait_for_training(runs: Path, old: set[int], timeout: float = 120) -> int:
    """The number of a new trial that has solved its configuration (it trains now)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for t in load(runs).get_trials(states=(TrialState.RUNNING,)):
            if t.number not in old and "params" in t.user_attrs:
                return t.number
        time.sleep(0.5)
    raise AssertionError("no trial started training")
