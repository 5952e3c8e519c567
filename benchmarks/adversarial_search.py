"""The search cases of ``adversarial.py``: resume, restarts, kill -9, one study name twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from adversarial import archdsl, env_for, success_expected


def data(tmp: Path) -> list[str]:
    from adversarial_cases import data as write_data

    return write_data(tmp)


# ---- search ---------------------------------------------------------------------------------------
def search_args(tmp: Path, study: str, minutes: str = "0.01", trials: str = "2") -> list[str]:
    space = ["--heads", "1:2", "--n", "4,8", "--depth", "1", "--lr", "1e-4:3e-3:log", "--set", "gate=none"]
    trainer = [*data(tmp), "--batch", "2", "--seq", "16", "--eval-bytes", "128", "--device", "cpu"]
    return ["search", "e88", "--budget", "50K", "--minutes", minutes, "--trials", trials, "--seeds", "0",
            "--no-prune", *space, *trainer, "--study", study, "--runs", "runs", "--quiet"]  # fmt: skip


def trials_of(tmp: Path, study: str) -> list:
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp / "runs" / study / "study.journal"))
    )
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def search_resume_repeats(tmp: Path):
    r = archdsl(search_args(tmp, "s"), tmp, 600)
    if r.rc != 0:
        return success_expected(r)
    r = archdsl(
        ["search", "--resume", "--trials", "2", "--study", "s", "--runs", "runs", "--quiet"], tmp, 600
    )
    if r.rc != 0:
        return success_expected(r)
    lrs = [t.params.get("lr") for t in trials_of(tmp, "s") if "retry_of" not in t.user_attrs]
    if len(set(lrs)) < len(lrs):
        return "silently-wrong", f"--resume drew trials again: lr {lrs}"
    return "ok", f"{len(lrs)} distinct trials"


def search_resume_original(tmp: Path):
    r = archdsl(search_args(tmp, "s", trials="1"), tmp, 600)
    if r.rc != 0:
        return success_expected(r)
    return success_expected(archdsl([*search_args(tmp, "s", trials="1"), "--resume"], tmp, 600))


def _workers(study: str) -> list[int]:
    r = subprocess.run(
        ["pgrep", "-f", f"archdsl.search.worker --study {study} "], capture_output=True, text=True
    )
    return [int(p) for p in r.stdout.split()]


def search_kill9(tmp: Path):
    study = f"k9-{os.getpid()}-{tmp.name}"
    argv = [sys.executable, "-m", "archdsl.cli", *search_args(tmp, study, minutes="2", trials="1")]
    proc = subprocess.Popen(
        argv, cwd=tmp, env=env_for(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _workers(study):
        time.sleep(0.5)
    if not _workers(study):
        proc.kill()
        return "harness-error", "no worker started in 120 s"
    time.sleep(3)
    proc.kill()
    proc.wait()
    time.sleep(10)
    left = _workers(study)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    if left:
        return "silently-wrong", f"{len(left)} worker(s) still running 10 s after kill -9 of the search"
    return "ok", "the workers died with the search"


def search_same_name(tmp: Path):
    argv = [sys.executable, "-m", "archdsl.cli", *search_args(tmp, "same", minutes="0.2", trials="1")]
    procs = [
        subprocess.Popen(
            argv, cwd=tmp, env=env_for(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in "ab"
    ]
    try:
        errs = [p.communicate(timeout=600)[1] for p in procs]
        results = [(p.returncode, err) for p, err in zip(procs, errs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any("Traceback" in err for _, err in results):
        return "traceback", next(err for _, err in results if "Traceback" in err).strip().splitlines()[-1]
    if all(rc == 0 for rc, _ in results):
        return "ok", "both ran (one joined)"
    refused = [err for rc, err in results if rc == 2 and "error:" in err]
    if refused and any(rc == 0 for rc, _ in results):
        return "ok", [line for line in refused[0].splitlines() if "error:" in line][0][:150]
    return "silently-wrong", f"exit codes {[rc for rc, _ in results]}"
