"""Golden tests: every error and warning of the front end, exactly as ``archdsl check`` prints it.

A case is ``tests/golden/errors/NAME.rnn`` (must fail, exit 2) or ``tests/golden/warnings/NAME.rnn``
(must pass, exit 0, with warnings). Its first line may hold extra options, ``# args: --preset big``,
or a whole command line, ``# argv: check nosuch.rnn``. The expected stderr is ``NAME.txt`` beside it.
Regenerate the expected files after changing a message with::

    ARCHDSL_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_errors.py

and read the diff before committing it.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shlex
import sys
from pathlib import Path
from unittest import mock

import pytest

from archdsl import cli
from archdsl.errors import ArchdslError
from archdsl.lang.specs_path import bundled

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*/*.rnn"))
UPDATE = os.environ.get("ARCHDSL_UPDATE_GOLDEN") == "1"
#: modules whose every ArchdslError / ArchdslWarning must be produced by some golden case
LANG = ROOT / "archdsl" / "lang"
#: the language's modules: every error site in them is reached by a golden case
FRONT = sorted(p.name for p in LANG.glob("*.py"))
#: error sites no input can reach (defensive), as "module:function: message start" -> why
UNREACHABLE = {
    "syntax_errors.py:syntax_error: syntax error: ": "only when lark rejects a text it then accepts",
}


def first_line(case: Path) -> str:
    return case.read_bytes().split(b"\n", 1)[0].decode(errors="replace")


def argv_of(case: Path) -> list[str]:
    first = first_line(case)
    if m := re.match(r"#\s*argv:(.*)", first):
        return shlex.split(m.group(1))
    extra = shlex.split(m.group(1)) if (m := re.match(r"#\s*args:(.*)", first)) else []
    return ["check", case.name, *extra]


def run_cli(case: Path) -> tuple[int, str, str]:
    """``archdsl ARGV`` in-process, from the case's folder (so messages carry no absolute paths)."""
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(case.parent)
        # argparse wraps its usage line to the terminal: the golden files are 80 columns wide
        with (
            mock.patch.dict(os.environ, {"COLUMNS": "80"}),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            rc = cli.main(argv_of(case))
    finally:
        os.chdir(cwd)
    # the list of bundled specs grows; keep the golden files independent of it
    return rc, out.getvalue(), err.getvalue().replace(", ".join(sorted(bundled())), "<bundled specs>")


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden(case: Path):
    rc, _, err = run_cli(case)
    assert "Traceback" not in err
    expected_rc = 2 if case.parent.name == "errors" else 0
    assert rc == expected_rc, f"exit status {rc}, expected {expected_rc}; stderr:\n{err}"
    if case.parent.name == "warnings":
        assert "warning:" in err and "error:" not in err
    golden = case.with_suffix(".txt")
    if UPDATE:
        golden.write_text(err)
    assert golden.exists(), f"no expected output {golden.name}; run with ARCHDSL_UPDATE_GOLDEN=1"
    assert err == golden.read_text()


@pytest.mark.parametrize("case", [c for c in CASES if not c.stem.startswith("cli_")], ids=lambda p: p.stem)
def test_diagnostics_are_located(case: Path):
    """A message about a spec's text points into it: file:line:col, the line, a caret."""
    _, _, err = run_cli(case)
    first = err.splitlines()[0]
    assert re.match(rf"^{re.escape(case.name)}:\d+:\d+: (error|warning): ", first), first
    assert re.search(r"^ {4}.*\n {4}\s*\^+$", err, re.M), err


def _sites() -> dict[tuple[str, int, int], str]:
    """Every ``ArchdslError(...)`` / ``ArchdslWarning(...)`` call in the front end -> its key."""
    sites = {}
    for module in FRONT:
        tree = ast.parse((LANG / module).read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
                    "ArchdslError",
                    "ArchdslWarning",
                ):
                    msg = node.args[0] if node.args else None
                    text = "".join(
                        p.value
                        for p in getattr(msg, "values", [msg])
                        if isinstance(p, ast.Constant) and isinstance(p.value, str)
                    )
                    key = (module, node.lineno, node.end_lineno)
                    sites[key] = f"{module}:{func.name}: {text[:40]}"
    return sites


def test_every_message_has_a_golden_case(monkeypatch):
    """Each error site of the parser and checker is reached by at least one golden case."""
    hits: set[tuple[str, int]] = set()
    init = ArchdslError.__init__

    def record(self, *args, **kwargs):
        frame = sys._getframe(1)
        hits.add((Path(frame.f_code.co_filename).name, frame.f_lineno))
        init(self, *args, **kwargs)

    monkeypatch.setattr(ArchdslError, "__init__", record)
    for case in CASES:
        run_cli(case)
    sites = _sites()
    missing = sorted(
        text
        for (module, lo, hi), text in sites.items()
        if not any(m == module and lo <= line <= hi for m, line in hits) and text not in UNREACHABLE
    )
    assert not missing, "messages without a golden case (add tests/golden/errors/*.rnn):\n" + "\n".join(
        missing
    )
    stale = set(UNREACHABLE) - set(sites.values())
    assert not stale, f"UNREACHABLE lists sites that no longer exist: {stale}"
