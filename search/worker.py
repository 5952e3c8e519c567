"""A search worker: pulls trials from the study until it reaches its target, each in its own process.

``python -m archdsl.search.worker --study NAME [--storage URL] [--runs DIR] [--worker K]``; ``archdsl
search`` starts one per GPU (``CUDA_VISIBLE_DEVICES``) or ``--workers N`` on the CPU, and a worker on
another host joins the same study through a database URL. Trials go through ``Study.optimize`` one at
a time, so that Optuna's heartbeat runs while the trial's process trains.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import optuna

from archdsl.errors import ArchdslError, format_error

from . import study as st
from .feasible import FeasibleSampler, feasible
from .repro import job, model_config, train_command, train_config
from .space import Candidate, Space, parse_range
from .trial import child_env, die_with_parent

POLL_S = 2.0
CURVE_POINTS = 200  # a trial's loss curve is kept in the study, thinned to this many points


class TrialFailed(Exception):
    """A trial that failed with a recorded reason (the study goes on)."""


def build_space(settings: st.Settings) -> Space:
    overrides = {k: parse_range(k, v) for k, v in settings.overrides.items()}
    return Space(settings.models, overrides, settings.fixed)


def trial_env(runs: Path, study: str) -> dict:
    """Compiled kernels are shared by every trial of a study (one Triton cache under runs/<study>/)."""
    env = dict(os.environ)
    env.setdefault("TRITON_CACHE_DIR", str((runs / study / "triton-cache").resolve()))
    return env


# ---- one trial process ----------------------------------------------------------------------------
def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-400:]


def _died(rc: int, timed_out: bool, timeout: float, log: Path) -> str:
    if timed_out:
        return f"timed out after {timeout:.0f} s (the trial process was killed)"
    if rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -rc == signal.SIGKILL else ""
        why = f"the trial process died with {name}{hint}"
    else:
        why = f"the trial process exited with status {rc} without a result"
    tail = _tail(log)
    return f"{why}; log: {tail}" if tail else why


def run_process(job: dict, trial_dir: Path, env: dict, on_config, on_report, timeout: float) -> dict:
    """Run ``archdsl.search.trial`` on a job; return its ``done`` message (or why it has none)."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    log = trial_dir / "trial.log"
    with open(log, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "archdsl.search.trial"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=logf,
            env=child_env(env),
            text=True,
            bufsize=1,
        )
    timed_out = threading.Event()

    def kill():
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    done: dict | None = None
    try:
        proc.stdin.write(json.dumps(job) + "\n")
        proc.stdin.flush()
        for line in proc.stdout:
            msg = json.loads(line)
            if msg["event"] == "config":
                on_config(msg["model"], msg["params"])
            elif msg["event"] == "report":
                proc.stdin.write(on_report(msg["fraction"], msg["bpb"]) + "\n")
                proc.stdin.flush()
            elif msg["event"] == "done":
                done = msg
    except (BrokenPipeError, json.JSONDecodeError):
        pass
    except BaseException:
        proc.kill()
        raise
    finally:
        rc = proc.wait()
        timer.cancel()
    if done is None:
        return {"status": "failed", "reason": _died(rc, timed_out.is_set(), timeout, log)}
    return done


# ---- the objective --------------------------------------------------------------------------------
def thin(curve: list, n: int = CURVE_POINTS) -> list:
    if len(curve) <= n:
        return [list(p) for p in curve]
    step = (len(curve) - 1) / (n - 1)
    return [list(curve[round(i * step)]) for i in range(n)]


def record_result(trial, res: dict, depth: int) -> None:
    keep = (
        "steps",
        "tokens",
        "tokens_per_s",
        "last100_loss",
        "val_bpb",
        "peak_mem_bytes",
        "peak_reserved_bytes",
        "params",
        "state_per_layer",
        "wall_s",
    )
    for k in keep:
        if res.get(k) is not None:
            trial.set_user_attr(k, res[k])
    if res.get("state_per_layer") is not None:
        trial.set_user_attr("state", int(res["state_per_layer"]) * depth)
    if res.get("curve"):
        trial.set_user_attr("curve", thin(res["curve"]))


def objective_values(settings: st.Settings, res: dict, depth: int) -> list[float]:
    first = res["val_bpb"] if settings.objective == "bpb" else res["last100_loss"]
    extra = {"tokens_per_s": lambda: res["tokens_per_s"], "state": lambda: res["state_per_layer"] * depth}
    return [float(first)] + [float(extra[m]()) for m in settings.multi]


def fits(deadline: float | None, study: optuna.Study, settings: st.Settings) -> bool:
    """Whether a trial started now ends before the deadline (None: no deadline). A trial takes as
    long as the longest of the study's last complete trials (start-up, warm-up and evaluation
    included), or its training minutes before any has completed."""
    if deadline is None:
        return True
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    spans = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done[-5:]]
    return time.time() + max(spans, default=60 * settings.minutes) <= deadline


class Worker:
    def __init__(
        self, study: optuna.Study, settings: st.Settings, runs: Path, name: str, deadline: float | None = None
    ):
        self.study, self.settings, self.runs, self.name = study, settings, runs, name
        self.deadline = deadline  # time.time() after which no trial may still be training
        self.space = build_space(settings)
        self.env = trial_env(runs, study.study_name)
        # only configurations whose width can be solved to the budget are sampled
        region = feasible(self.space, settings.budget, settings.tolerance, settings.align)
        seed = st.sampler_seed(settings, study.study_name, -1, len(study.get_trials(deepcopy=False)))
        study.sampler = FeasibleSampler(study.sampler, region, seed)

    def objective(self, trial: optuna.Trial):
        s = self.settings
        trial.set_user_attr("worker", self.name)
        try:
            cand: Candidate = self.space.sample(trial)
        except ArchdslError as e:
            return self.fail(trial, "invalid configuration: " + format_error(e).replace("\n", " "))
        trial.set_user_attr("lr", cand.lr)
        trial_dir = self.runs / self.study.study_name / f"trial-{trial.number}"
        trial.set_user_attr("run_dir", str(trial_dir))
        report = self.report_enabled()
        fractions = tuple(s.report_fractions) if report else ()
        tcfg = train_config(cand, s, trial_dir, s.seed, report_fractions=fractions)

        def on_config(model: dict, params: int) -> None:
            trial.set_user_attr("params", params)
            trial.set_user_attr("dim", model.get("dim"))
            trial.set_user_attr("model_config", model)
            trial.set_user_attr("command", train_command(model, tcfg))

        def on_report(fraction: float, bpb: float) -> str:
            trial.report(bpb, step=round(fraction * 100))
            return "prune" if trial.should_prune() else "go"

        try:
            spec = job(model_config(cand, s, s.seed), tcfg, s, report)
            out = run_process(spec, trial_dir, self.env, on_config, on_report, s.timeout_s())
        except KeyboardInterrupt:
            self.interrupted(trial)
            raise
        res = out.get("result") or {}
        if res.get("status") == "interrupted":  # a signal stopped the trainer: not the configuration's fault
            self.interrupted(trial)
            raise TrialFailed("interrupted")
        record_result(trial, res, cand.depth)
        trial.set_user_attr("status", out["status"])
        if out["status"] == "pruned":
            raise optuna.TrialPruned(out.get("reason", "pruned"))
        if out["status"] != "ok":
            return self.fail(trial, out.get("reason", "failed"))
        return objective_values(s, res, cand.depth)

    def interrupted(self, trial) -> None:
        """The search was stopped under this trial: it is not counted, and runs again on --resume."""
        trial.set_user_attr(st.STALE_ATTR, True)
        trial.set_user_attr("fail_reason", "interrupted (the search was stopped); retried on --resume")
        self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})

    def report_enabled(self) -> bool:
        return self.settings.prune and not self.settings.multi and bool(self.settings.report_fractions)

    def fail(self, trial, reason: str):
        trial.set_user_attr("fail_reason", reason)
        raise TrialFailed(reason)

    def loop(self) -> None:
        """Run trials until the study has its target count of ended trials."""
        target = self.settings.trials
        while True:
            with warnings.catch_warnings():  # RDB storage: fail (and queue again) trials without heartbeat
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            c = st.counts(self.study)
            if c.finished >= target or not fits(self.deadline, self.study, self.settings):
                return
            if c.waiting == 0 and c.finished + c.running >= target:
                time.sleep(POLL_S)  # the last trials run elsewhere; wait in case one is retried
                continue
            try:
                self.study.optimize(self.objective, n_trials=1, catch=(TrialFailed,))
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as e:
                if isinstance(e, ValueError) and "Cannot tell" not in str(e):
                    raise
                # another worker failed this trial as stale (its heartbeat was late); it was retried
                print(f"archdsl search: {self.name}: {e}", file=sys.stderr)


def serve(
    study_name: str, storage: str | None, runs: Path, worker: int, deadline: float | None = None
) -> int:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the search shows each trial's end and reason
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")  # --enqueue may be
    store = st.open_storage(study_name, storage, runs)
    study = st.load(study_name, store, worker=worker)
    name = f"{socket.gethostname()}:{os.getpid()}:w{worker}"
    Worker(study, st.settings_of(study), runs, name, deadline).loop()
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m archdsl.search.worker", description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True)
    p.add_argument("--storage", help="database URL or journal file (default runs/<study>/study.journal)")
    p.add_argument("--runs", default=None, help="where trial run directories go (default runs/)")
    p.add_argument("--worker", type=int, default=0, help="index of this worker (seeds its sampler)")
    p.add_argument("--deadline", type=float, help="Unix time after which no trial may still train")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stopped: the running trial is queued again, not counted
    die_with_parent(signal.SIGTERM)
    try:
        return serve(args.study, args.storage, st.runs_dir(args.runs), args.worker, args.deadline)
    except ArchdslError as e:
        print(format_error(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
