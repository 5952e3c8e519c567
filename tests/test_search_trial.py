"""One trial in its own process with the real trainer: the budget check, pruning, and every way to fail."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from archdsl.search import trial
from archdsl.search.worker import _died, run_process, trial_env

from archdsl.config import to_argv
from archdsl.errors import ArchdslError
from archdsl.lm.config import ModelConfig
from archdsl.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus-val.txt.xz"
BUDGET = 200_000


def job(tmp_path: Path, sets: dict, report: bool = False) -> dict:
    """A trial's job as the worker writes it: both configs as ``key=value`` items."""
    train = TrainConfig(
        minutes=0.02,
        batch=4,
        seq=16,
        eval_bytes=64,
        device="cpu",
        out=str(tmp_path),
        data=[str(CORPUS)],
        progress=False,
        checkpoint=False,
        report_fractions=(0.25, 0.5, 0.75) if report else (),
    )
    model = ModelConfig("e88", sets=sets, depth=1, params=BUDGET, seed=0)
    return {
        "model": to_argv(model),
        "train": to_argv(train),
        "budget": BUDGET,
        "tolerance": 0.01,
        "report": report,
    }


def run(tmp_path: Path, j: dict, prune_at: float | None = None, timeout: float = 300):
    seen = {"config": [], "reports": []}

    def on_report(fraction, bpb):
        seen["reports"].append((fraction, bpb))
        return "prune" if prune_at is not None and fraction >= prune_at else "go"

    out = run_process(
        j, tmp_path, trial_env(tmp_path, "s"), lambda m, p: seen["config"].append((m, p)), on_report, timeout
    )
    return out, seen


@pytest.mark.slow
def test_trial_is_solved_to_the_budget_and_pruned_on_request(tmp_path):
    out, seen = run(tmp_path, job(tmp_path, {"heads": 2, "n": 8, "gate": "none"}, report=True), prune_at=0.5)
    assert out["status"] == "pruned", out
    assert "pruned at 50%" in out["reason"]
    ((model, params),) = seen["config"]
    assert abs(params - BUDGET) <= 0.01 * BUDGET and model["dim"] > 0 and model["sets"]["heads"] == 2
    assert [f for f, _ in seen["reports"]] == [0.25, 0.5]  # the trainer stopped at the pruning report
    assert out["result"]["status"] == "pruned" and out["result"]["params"] == params
    assert [f for f, _ in out["result"]["reports"]] == [0.25, 0.5]  # it stopped there, before the end


def test_invalid_choice_fails_before_training(tmp_path):
    out, seen = run(tmp_path, job(tmp_path, {"heads": 0, "n": 8}))
    assert out["status"] == "failed" and out["reason"].startswith("invalid configuration:")
    assert "heads 0" in out["reason"] and seen["config"] == [] and "result" not in out


def test_a_trial_past_its_time_is_killed(tmp_path):
    out, _ = run(tmp_path, job(tmp_path, {"heads": 2, "n": 8}), timeout=0.5)
    assert out["status"] == "failed" and out["reason"].startswith("timed out after 0 s")


def test_reasons_for_a_process_that_died(tmp_path):
    (tmp_path / "trial.log").write_text("step 3\nKilled\n")
    why = _died(-signal.SIGKILL, False, 10, tmp_path / "trial.log")
    assert "died with SIGKILL (out of memory?" in why and "log: step 3 | Killed" in why
    assert "exited with status 3 without a result" in _died(3, False, 10, tmp_path / "nothing.log")


def test_budget_check():
    assert trial.check_budget(200_500, BUDGET, 0.01) is None
    reason = trial.check_budget(203_000, BUDGET, 0.01)
    assert "203,000 is +1.50% from the budget 200,000" in reason and "rejected before training" in reason


class CompileError(Exception):
    pass


CompileError.__module__ = "triton.compiler.errors"


@pytest.mark.parametrize(
    "exc, reason",
    [
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "out of memory: CUDA out of memory."),
        (MemoryError(), "out of memory: MemoryError"),
        (CompileError("at 12:4: unsupported op"), "kernel compile failure: CompileError: at 12:4"),
        (ArchdslError("axis 'h' has size 0"), "invalid configuration: error: axis 'h' has size 0"),
        (ValueError("bad\nsecond line"), "ValueError: bad"),
    ],
)
def test_classify(exc, reason):
    assert trial.classify(exc).startswith(reason)


@dataclass
class Result:
    status: str = "ok"
    params: int = BUDGET
    val_bpb: float | None = 2.0
    last100_loss: float | None = 1.5
    message: str = ""
    curve: list = field(default_factory=list)


class Chan:
    def __init__(self):
        self.sent = []

    def send(self, **msg):
        self.sent.append(msg)


@pytest.mark.parametrize(
    "result, status, reason",
    [
        (Result(), "ok", None),
        (
            Result("nonfinite", message="non-finite loss (nan) at step 7"),
            "failed",
            "non-finite loss: non-finite",
        ),
        (Result(params=BUDGET + 1), "failed", "the solver said"),
        (Result(val_bpb=float("nan")), "failed", "non-finite loss at the end"),
        (Result("interrupted", message="stopped by SIGTERM"), "failed", "interrupted: stopped by SIGTERM"),
    ],
)
def test_result_to_outcome(result, status, reason):
    chan = Chan()
    trial.finish(chan, result, BUDGET)
    (msg,) = chan.sent
    assert msg["status"] == status and (reason is None or reason in msg["reason"])
