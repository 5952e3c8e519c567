"""One trial in its own process: ``python -m archdsl.search.trial`` (started by a search worker).

Protocol, one JSON object per line: the worker writes the job to stdin; the trial answers on stdout
with ``config`` (the solved model and its exact parameter count), any number of ``report`` (held-out
bpb at a fraction of the time budget; the worker answers ``go`` or ``prune`` on stdin) and one
``done`` (status ok | pruned | failed, the reason, the result). Everything else the trial prints goes
to its log (stderr). A crash without ``done`` (a signal, the OOM killer) is the worker's to explain.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import os
import signal
import sys
import traceback

from archdsl.errors import ArchdslError, format_error

PR_SET_PDEATHSIG = 1
#: the pid of the process that started this one (set by the parent: a parent that died before the
#: prctl below leaves this process to init or to a subreaper, whose pid is not 1 in a container)
PARENT_ENV = "ARCHDSL_PARENT_PID"


def child_env(env: dict) -> dict:
    """``env`` for a child that is to die with this process."""
    return {**env, PARENT_ENV: str(os.getpid())}


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: the kernel sends ``sig`` to this process when its parent dies (so a killed worker leaks
    no trial, and a killed search no worker)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        return
    expected = os.environ.get(PARENT_ENV)
    if os.getppid() == 1 or (expected and expected.isdigit() and os.getppid() != int(expected)):
        os._exit(1)  # the parent is gone already


class Channel:
    """The protocol on the process's original stdout/stdin; fd 1 itself is pointed at the log."""

    def __init__(self):
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        sys.stdout.flush()
        os.dup2(2, 1)  # prints of the trainer, the compiler, C libraries -> the log

    def send(self, **msg) -> None:
        self.out.write(json.dumps(msg, default=_jsonable) + "\n")
        self.out.flush()

    def ask(self, **msg) -> str:
        self.send(**msg)
        return sys.stdin.readline().strip()


def _jsonable(x):
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def classify(exc: BaseException) -> str:
    """A one-line reason: invalid configuration, out of memory, kernel compile failure or the error."""
    if isinstance(exc, ArchdslError):
        return "invalid configuration: " + format_error(exc).replace("\n", " ")
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    name = type(exc).__name__
    module = type(exc).__module__ or ""
    if name == "OutOfMemoryError" or isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return f"out of memory: {text or name}"
    if module.startswith("triton") or "CompilationError" in name or "archdsl.codegen" in module:
        return f"kernel compile failure: {name}: {text}"
    return f"{name}: {text}"


def exact_count(model_cfg) -> int:
    """The exact parameter count of a solved configuration (computed, nothing is built)."""
    from archdsl.lm.budget import sizes

    return int(sizes(model_cfg).params)


def check_budget(params: int, budget: int, tolerance: float) -> str | None:
    off = (params - budget) / budget
    if abs(off) > tolerance:
        return (
            f"parameter count {params:,} is {off:+.2%} from the budget {budget:,} "
            f"(allowed ±{tolerance:.1%}); rejected before training"
        )
    return None


def run(job: dict, chan: Channel) -> None:
    from archdsl.config import apply_overrides
    from archdsl.lm.budget import solve
    from archdsl.lm.config import ModelConfig
    from archdsl.train.trainer import Pruned, TrainConfig, train

    budget, tol = int(job["budget"]), float(job["tolerance"])
    try:
        solved = solve(apply_overrides(ModelConfig(), job["model"], "trial job"), budget, tolerance=tol)
        params = exact_count(solved)
    except ArchdslError as e:
        chan.send(event="done", status="failed", reason=classify(e))
        return
    chan.send(event="config", model=dataclasses.asdict(solved), params=params)
    reason = check_budget(params, budget, tol)
    if reason:
        chan.send(event="done", status="failed", reason=reason)
        return

    def on_report(fraction: float, bpb: float) -> None:
        if chan.ask(event="report", fraction=fraction, bpb=bpb) == "prune":
            raise Pruned(f"pruned at {fraction:.0%} of the budget (held-out {bpb:.4f} bpb)")

    cfg = apply_overrides(TrainConfig(), job["train"], "trial job")
    try:
        result = train(solved, cfg, on_report=on_report if job.get("report") else None)
    except Pruned as e:
        chan.send(event="done", status="pruned", reason=str(e))
        return
    finish(chan, result, params)


def finish(chan: Channel, result, params: int) -> None:
    res = dataclasses.asdict(result)
    status = res.get("status", "ok")
    if status == "pruned":
        chan.send(event="done", status="pruned", reason=res.get("message") or "pruned", result=res)
    elif status != "ok":
        what = {"nonfinite": "non-finite loss"}.get(status, status)
        chan.send(
            event="done",
            status="failed",
            result=res,
            reason=f"{what}: {res.get('message') or 'training stopped'}",
        )
    elif res.get("params") not in (None, params):
        chan.send(
            event="done",
            status="failed",
            result=res,
            reason=f"the trained model has {res['params']:,} parameters, the solver said {params:,}",
        )
    elif not all(math.isfinite(float(res.get(k) or 0.0)) for k in ("val_bpb", "last100_loss")):
        chan.send(event="done", status="failed", result=res, reason="non-finite loss at the end of training")
    else:
        chan.send(event="done", status="ok", result=res)


def main() -> int:
    die_with_parent()
    chan = Channel()
    job = json.loads(sys.stdin.readline())
    try:
        run(job, chan)
    except BaseException as e:  # every failure is reported with its reason; the traceback goes to the log
        traceback.print_exc()
        chan.send(event="done", status="failed", reason=classify(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
