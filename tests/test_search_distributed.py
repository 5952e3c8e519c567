"""Several hosts, one study: two searches share a PostgreSQL study; one is killed mid-trial.

A private PostgreSQL server (Debian's packages: ``make test`` installs them when run as root) runs
from a temporary directory on 127.0.0.1 at a free port. Worker B is SIGKILLed with its trial; worker A
finds B's trial stale through Optuna's heartbeat, the trial is queued again and A runs it, so the study
reaches its count and every trial that had finished before the kill is still there, unchanged.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus-val.txt.xz"
TRIALS = 3


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """initdb + pg_ctl in a temporary directory, trust auth on 127.0.0.1 only (as ``postgres`` if root)."""

    def __init__(self, bindir: Path):
        self.bin, self.port = bindir, _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="archdsl-pg-"))
        self.data, self.log = self.dir / "data", self.dir / "server.log"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")

    def _run(self, *argv: str) -> None:
        subprocess.run([*self.as_user, *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> str:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "start",
        )
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url():
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb): apt-get install postgresql "
            "(make test installs them when run as root)"
        )
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'archdsl[search]'")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _has_user("postgres")):
        pytest.skip("running as root without runuser or a 'postgres' user: PostgreSQL refuses to run as root")
    server = PrivatePostgres(bindir)
    try:
        url = server.start()
    except subprocess.CalledProcessError as e:
        server.stop()
        pytest.fail(f"PostgreSQL did not start: {e.stderr.decode(errors='replace')[-2000:]}")
    yield url
    server.stop()


def _search(url: str, *args: str, runs: Path) -> subprocess.Popen:
    env = {**os.environ, "ARCHDSL_HEARTBEAT_S": "1", "ARCHDSL_GRACE_S": "8", "OMP_NUM_THREADS": "1"}
    argv = [
        sys.executable,
        "-m",
        "archdsl.cli",
        "search",
        *args,
        "--storage",
        url,
        "--study",
        "dist",
        "--runs",
        str(runs),
        "--quiet",
    ]
    runs.mkdir(parents=True, exist_ok=True)
    with open(runs / "search.log", "w") as log:
        return subprocess.Popen(
            argv, env=env, cwd=ROOT, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
        )


# Only a guard against a hang: the waits below end on events (the awaited state, or the exit of a process
# that had to produce it), never on a guess of how long a loaded machine needs.
HANG_S = 1800


def _wait(pred, what: str, needs: dict[str, tuple[subprocess.Popen, Path]]):
    """Poll ``pred`` until it holds; fail at once, with its log, if a process it ``needs`` has exited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < HANG_S:
        got = pred()
        if got:
            return got
        for name, (proc, runs) in needs.items():
            if proc.poll() is not None:
                log = (runs / "search.log").read_text()[-3000:]
                raise AssertionError(f"{name} exited ({proc.returncode}) before {what}:\n{log}")
        time.sleep(0.5)
    raise AssertionError(f"no {what} after {HANG_S} s (hung?)")


def _exit_code(proc: subprocess.Popen) -> int:
    """Wait for a process to end (however long a loaded machine takes; HANG_S guards a hang)."""
    return proc.wait(timeout=HANG_S)


class Reader:
    """Reads the shared study from the test (one storage, no heartbeat of its own)."""

    def __init__(self, url: str):
        self.storage = optuna.storages.RDBStorage(url.replace("postgresql://", "postgresql+psycopg://"))

    def study(self):
        names = [s.study_name for s in optuna.get_all_study_summaries(self.storage, include_best_trial=False)]
        return optuna.load_study(study_name="dist", storage=self.storage) if "dist" in names else None

    def trials(self, *states):
        return self.study().get_trials(states=states or None)


@pytest.mark.slow
@pytest.mark.xdist_group("search")
def test_two_hosts_one_killed_mid_trial(postgres_url, tmp_path):
    db = Reader(postgres_url)
    a = _search(
        postgres_url,
        "e88",
        "--budget",
        "200K",
        "--minutes",
        "0.04",
        "--trials",
        str(TRIALS),
        "--heads",
        "1:3",
        "--n",
        "8,16",
        "--depth",
        "1:2",
        "--set",
        "gate=none",
        "--data",
        str(CORPUS),
        "--batch",
        "4",
        "--seq",
        "16",
        "--eval-bytes",
        "128",
        "--device",
        "cpu",
        "--seeds",
        "0",
        "--no-prune",
        runs=tmp_path / "a",
    )
    b = None
    try:
        _wait(db.study, "the study was created", {"search A": (a, tmp_path / "a")})
        b = _search(postgres_url, "--join", runs=tmp_path / "b")
        both = {"search A": (a, tmp_path / "a"), "search B": (b, tmp_path / "b")}

        # once a trial has finished and B trains one of its own (it has reported its parameter count),
        # kill B's whole process group: its search, its worker and the trial
        def b_training():
            running = db.trials(TrialState.RUNNING)
            mine = [t for t in running if _runs_under(t, tmp_path / "b") and "params" in t.user_attrs]
            return mine if db.trials(TrialState.COMPLETE) else []

        victim = _wait(b_training, "a trial had finished while worker B trained one", both)[0]
        before = {t.number: t.values for t in db.trials(TrialState.COMPLETE)}
        os.killpg(b.pid, signal.SIGKILL)
        _exit_code(b)
        assert _exit_code(a) == 0, (tmp_path / "a" / "search.log").read_text()[-3000:]
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    trials = db.trials()
    killed = trials[victim.number]
    assert killed.state == TrialState.FAIL  # failed by A through the heartbeat, not counted ...
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retries and retries[0].state == TrialState.COMPLETE  # ... and run again with its parameters
    assert retries[0].params == killed.params
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= TRIALS
    assert before
    for number, values in before.items():  # no finished trial is lost or changed
        assert trials[number].state == TrialState.COMPLETE and trials[number].values == values
    for t in complete:
        assert abs(t.user_attrs["params"] - 200_000) <= 2_000
    report = (tmp_path / "a" / "dist" / "report.md").read_text()  # A wrote the study's report
    assert f"| {victim.number} | retried |" in report and "heartbeat stopped" in report


def _runs_under(trial, runs: Path) -> bool:
    return str(trial.user_attrs.get("run_dir", "")).startswith(str(runs))
