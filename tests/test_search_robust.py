"""A search that restarts, resumes, is killed or meets another search on its study's name.

Regression tests of the search defects of the adversarial review (issue 11): every worker start drew
with the same seed (a restarted worker and ``--resume`` repeated trials), a search killed with
SIGKILL could leave its workers, two searches on one name ended in ``DuplicatedStudyError``, and
``--resume`` refused the study's own command line. Everything runs in-process on a journal file,
except the process-death test.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from archdsl.search import cli as search_cli  # noqa: E402
from archdsl.search import study as st  # noqa: E402

from archdsl.errors import ArchdslError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def args_of(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    search_cli.add_arguments(p)
    return p.parse_args(argv)


def new_study(tmp_path: Path) -> object:
    settings = st.Settings(models=["e88"], budget=200_000, minutes=0.1, trials=8)
    storage = st.open_storage("s", None, tmp_path)
    st.create("s", storage, settings)
    return storage


def draw(study) -> float:
    trial = study.ask()
    x = trial.suggest_float("x", 0.0, 1.0)
    study.tell(trial, x)
    return x


def test_each_worker_start_draws_new_numbers(tmp_path):
    storage = new_study(tmp_path)
    # worker 0 started three times (a restart, a --resume): each start draws something new
    starts = [draw(st.load("s", storage, worker=0)) for _ in range(3)]
    assert len(set(starts)) == 3, starts
    # two workers that start together draw differently too
    a, b = st.load("s", storage, worker=0), st.load("s", storage, worker=1)
    assert draw(a) != draw(b)
    # and a start is reproducible from (study, worker, start)
    s = st.settings_of(a)
    assert st.sampler_seed(s, "s", 0, 3) == st.sampler_seed(s, "s", 0, 3) != st.sampler_seed(s, "t", 0, 3)


ORIGINAL = ["e88", "--budget", "200K", "--minutes", "0.5", "--heads", "1:3", "--set", "gate=none"]


def test_resume_accepts_the_original_command_line(tmp_path):
    common = ["--study", "s", "--runs", str(tmp_path), "--quiet"]
    study, created, _ = search_cli.open_study(args_of(ORIGINAL + common), tmp_path)
    study, settings, _ = search_cli.open_study(args_of([*ORIGINAL, *common, "--resume"]), tmp_path)
    assert settings == created
    changed = [*ORIGINAL[:4], "1", *ORIGINAL[5:], *common, "--resume"]  # --minutes 1
    with pytest.raises(ArchdslError) as e:
        search_cli.open_study(args_of(changed), tmp_path)
    assert "--minutes (minutes: the study has 0.5, given 1.0)" in e.value.message
    with pytest.raises(ArchdslError, match="--heads"):
        search_cli.open_study(args_of(["--heads", "2:4", *common, "--resume"]), tmp_path)


def test_second_search_on_a_live_study_says_why(tmp_path, monkeypatch):
    common = ["--study", "s", "--runs", str(tmp_path), "--quiet"]
    study, _, _ = search_cli.open_study(args_of(ORIGINAL + common), tmp_path)
    study.ask()  # a trial running: the study is live
    with pytest.raises(ArchdslError) as e:
        search_cli.open_study(args_of(ORIGINAL + common), tmp_path)
    assert "is being searched now (1 trial(s) running" in e.value.message and "--join" in e.value.hint
    # the race: both searches saw no study, the other created it first
    monkeypatch.setattr(st, "study_exists", lambda name, storage: False)
    with pytest.raises(ArchdslError, match="is being searched now"):
        search_cli.open_study(args_of(ORIGINAL + common), tmp_path)


CHILD = """
import sys, time
from archdsl.search.trial import die_with_parent
import signal
die_with_parent(signal.SIGTERM)
print("ready", flush=True)
time.sleep(60)
"""
PARENT = """
import os, subprocess, sys, time
from archdsl.search.trial import child_env
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=child_env(dict(os.environ)),
                         stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_children_die_with_a_parent_killed_outright():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the child outlived its parent"


def test_a_child_whose_parent_is_already_gone_exits():
    env = {**os.environ, "ARCHDSL_PARENT_PID": "999999999"}  # not our parent: it died before the prctl
    r = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "ready" not in r.stdout
