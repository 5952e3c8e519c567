"""Replay the adversarial review of archdsl (issue 11) and count what still goes wrong.

``python benchmarks/adversarial.py [-k SUBSTRING] [--jobs 2] [--markdown FILE]``

Every case runs ``archdsl`` as a subprocess (CPU only, tiny shapes, a timeout each) in its own
temporary folder and is classified:

- ``ok``: the expected outcome (bad input: exit 2 with one ``error:`` line; good input: success);
- ``traceback``: a Python traceback reached the user;
- ``hang``: the timeout expired;
- ``silently-wrong``: no traceback, but a wrong outcome (a meaningless value accepted, a kernel
  that ``verify`` finds wrong, data lost, code from a file run, a trial repeated, a process leaked).

Cases that need a GPU (the bf16 mLSTM-like spec) are listed as skipped. The cases themselves are in
``adversarial_cases.py``; this file runs them and prints the table and the counts.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("ok", "traceback", "hang", "silently-wrong")


@dataclass
class Run:
    rc: int | None  # None: timed out
    out: str
    err: str
    seconds: float

    @property
    def hung(self) -> bool:
        return self.rc is None


def env_for(tmp: Path, cache: Path | None = None) -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ARCHDSL_CACHE": str(cache or SHARED_CACHE),
        "TRITON_CACHE_DIR": str((cache or SHARED_CACHE) / "triton"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


SHARED_CACHE = Path(tempfile.mkdtemp(prefix="archdsl-adv-cache-"))


def archdsl(args: list[str], tmp: Path, timeout: float = 120, **kw) -> Run:
    return sh([sys.executable, "-m", "archdsl.cli", *args], tmp, timeout, **kw)


def sh(argv: list[str], tmp: Path, timeout: float = 120, env: dict | None = None, stdout=None) -> Run:
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=tmp,
        env=env or env_for(tmp),
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a hung case is killed with all its children
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        return Run(proc.returncode, out or "", err, time.monotonic() - t0)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        return Run(None, out or "", err, time.monotonic() - t0)


def error_expected(r: Run) -> tuple[str, str]:
    """Bad input: exit 2 and one ``error:`` line, nothing else is right."""
    last = next((line for line in reversed(r.err.splitlines()) if "error:" in line), "")
    if r.hung:
        return "hang", f"no answer in {r.seconds:.0f} s"
    if "Traceback" in r.err:
        return "traceback", _last_line(r.err)
    errors = [line for line in r.err.splitlines() if "error:" in line]
    if r.rc == 2 and len(errors) == 1:
        return "ok", last.strip()
    if r.rc == 0:
        return "silently-wrong", "accepted (exit 0)"
    return "silently-wrong", f"exit {r.rc}, {len(errors)} error line(s): {_last_line(r.err)}"


def success_expected(r: Run, what: str = "") -> tuple[str, str]:
    if r.hung:
        return "hang", f"no answer in {r.seconds:.0f} s"
    if "Traceback" in r.err:
        return "traceback", _last_line(r.err)
    if r.rc != 0:
        return "silently-wrong", f"exit {r.rc}: {_last_line(r.err)}"
    return "ok", what or "exit 0"


def verify_expected(r: Run) -> tuple[str, str]:
    """A spec that compiles must verify: a FAIL line is a kernel that is silently wrong."""
    if r.hung or "Traceback" in r.err:
        return success_expected(r)
    if r.rc == 2:
        return "ok", "refused: " + _last_line(r.err)
    fails = [line.split()[1] for line in r.out.splitlines() if line.strip().startswith("FAIL")]
    if r.rc == 1 and fails:
        return "silently-wrong", "verify: FAIL " + ", ".join(fails[:4])
    return success_expected(r, "verified")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:160]


@dataclass
class Outcome:
    group: str
    name: str
    kind: str
    detail: str
    seconds: float


def run_case(case, root: Path) -> Outcome:
    group, name, fn = case
    tmp = Path(tempfile.mkdtemp(prefix="case-", dir=root))
    t0 = time.monotonic()
    try:
        kind, detail = fn(tmp)
    except Exception as e:  # a fault of the harness: shown, not counted as archdsl's
        kind, detail = "harness-error", f"{type(e).__name__}: {e}"[:200]
    return Outcome(group, name, kind, detail, time.monotonic() - t0)


def table(outcomes: list[Outcome]) -> str:
    lines = ["| group | case | outcome | detail | s |", "|---|---|---|---|---|"]
    for o in outcomes:
        detail = o.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {o.group} | `{o.name}` | {o.kind} | {detail} | {o.seconds:.0f} |")
    return "\n".join(lines)


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    c = {k: 0 for k in (*KINDS, "skipped", "harness-error")}
    for o in outcomes:
        c[o.kind] = c.get(o.kind, 0) + 1
    return c


def main(argv: list[str] | None = None) -> int:
    from adversarial_cases import CASES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-k", default="", help="run only the cases whose group or name contains this")
    p.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    p.add_argument("--markdown", help="also write the table and the counts to this file")
    args = p.parse_args(argv)
    cases = [c for c in CASES if args.k in c[0] or args.k in c[1]]
    root = Path(tempfile.mkdtemp(prefix="archdsl-adversarial-"))
    t0 = time.monotonic()
    with ThreadPoolExecutor(args.jobs) as ex:
        outcomes = []
        for o in ex.map(lambda c: run_case(c, root), cases):
            print(f"{o.kind:<15} {o.group:<10} {o.name}  ({o.seconds:.0f} s) {o.detail[:100]}", flush=True)
            outcomes.append(o)
    c = counts(outcomes)
    summary = ", ".join(f"{v} {k}" for k, v in c.items() if v or k in KINDS)
    print(f"\n{len(outcomes)} cases in {time.monotonic() - t0:.0f} s: {summary}")
    if args.markdown:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        command = "python benchmarks/adversarial.py " + " ".join(argv if argv is not None else sys.argv[1:])
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        Path(args.markdown).write_text(
            f"# Adversarial replay of issue 11\n\n`{command}` at commit `{commit}`, {when}, "
            f"CPU only ({os.cpu_count()} cores).\n\n**{len(outcomes)} cases: {summary}.**\n\n"
            f"{table(outcomes)}\n"
        )
    return 0 if c["traceback"] == c["hang"] == c["silently-wrong"] == 0 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
