"""The docs cannot rot: their specs check, their error examples are the real messages, and the
tutorial's commands and Python code run and print what the tutorial shows.

Tutorial commands: ``archdsl check`` outputs must match exactly; ``compile``, ``verify`` and
``train`` must succeed and print lines of the shown form (numbers and hashes may differ);
``search`` and ``report`` take minutes, so their command lines are parsed and the search space is
built, but no trial runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from archdsl.cli import main
from archdsl.lang.checker import check_spec
from archdsl.lang.parser import parse

ROOT = Path(__file__).resolve().parent.parent
LANGUAGE = (ROOT / "docs" / "language.md").read_text()
TUTORIAL = (ROOT / "docs" / "tutorial.md").read_text()


def blocks(markdown: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", markdown, re.S | re.M)


def commands(markdown: str) -> list[tuple[list[str], list[str]]]:
    """Each ``$ archdsl …`` line of the console blocks with the output lines shown under it."""
    out = []
    for block in blocks(markdown, "console"):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            line, *shown = chunk.rstrip("\n").split("\n")
            out.append((shlex.split(line), shown))
    return out


def shape(line: str) -> str:
    """A line with its numbers and hashes blanked: '1.06e-07' and 'gated_27d852b7' become '#'."""
    return re.sub(r"\d[\w.,+-]*", "#", re.sub(r"[0-9a-f]{8,}", "#", line.rstrip()))


@pytest.mark.parametrize("i", range(len(blocks(LANGUAGE, "rnn"))))
def test_language_examples_parse_and_complete_ones_check(i):
    text = blocks(LANGUAGE, "rnn")[i]
    spec = parse(text, f"language-{i}.rnn")
    if "hyper dim" in text and "output" in text:
        check_spec(spec)


def test_language_error_examples_are_the_real_messages():
    examples = [b for b in blocks(LANGUAGE, "text") if re.match(r"^\w+\.rnn:\d+:\d+: (error|warning)", b)]
    assert len(examples) >= 5
    for example in examples:
        name = example.split(".rnn:")[0]
        golden = [p for p in (ROOT / "tests" / "golden").glob(f"*/{name}.txt")]
        assert golden, f"language.md shows {name}.rnn, which is not a golden case"
        assert golden[0].read_text() == example


@pytest.fixture
def tutorial_dir(tmp_path, monkeypatch):
    """The files the tutorial asks for: gated.rnn, and typo.rnn with tanh(v) misspelt."""
    spec = blocks(TUTORIAL, "rnn")[0]
    (tmp_path / "gated.rnn").write_text(spec)
    assert "tanh(v)" in spec
    (tmp_path / "typo.rnn").write_text(spec.replace("tanh(v)", "tahn(v)"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_tutorial_spec_checks(tutorial_dir):
    result = check_spec(parse((tutorial_dir / "gated.rnn").read_text(), "gated.rnn"))
    assert "demo" in result.presets and not result.warnings


def test_tutorial_check_outputs_are_real(tutorial_dir):
    checks = [(argv, shown) for argv, shown in commands(TUTORIAL) if argv[:2] == ["archdsl", "check"]]
    assert len(checks) >= 3
    for argv, shown in checks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = main(argv[1:])
        assert rc == (2 if "error:" in out.getvalue() else 0)
        assert out.getvalue().rstrip("\n").split("\n") == shown, " ".join(argv)


def test_tutorial_python_runs(tutorial_dir):
    (code,) = blocks(TUTORIAL, "python")
    exec(compile(code, "tutorial.md", "exec"), {"__name__": "tutorial"})  # noqa: S102


@pytest.mark.slow
def test_tutorial_commands_run(tutorial_dir):
    """compile, verify and train as the tutorial shows them (about half a minute on a CPU)."""
    ran = 0
    for argv, shown in commands(TUTORIAL):
        if argv[1] in ("check", "search", "report"):
            continue
        proc = subprocess.run(
            [sys.executable, "-m", "archdsl.cli", *argv[1:]], capture_output=True, text=True
        )
        assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stderr}"
        real = {shape(line) for line in (proc.stdout + proc.stderr).splitlines()}
        for line in shown:
            if line.strip() != "...":
                assert shape(line) in real, (
                    f"{' '.join(argv)}: no output line like\n{line}\nin\n{proc.stdout}"
                )
        ran += 1
    assert ran == 3


def test_tutorial_search_commands_parse(tutorial_dir):
    """The search and report command lines are valid and the search space builds (no trial runs)."""
    from archdsl.search import cli as search_cli
    from archdsl.search import report as search_report

    lines = [argv for argv, _ in commands(TUTORIAL) if argv[1] in ("search", "report")]
    assert [argv[1] for argv in lines] == ["search", "report"]
    parser = argparse.ArgumentParser()
    search_cli.add_arguments(parser)
    settings = search_cli.new_settings(parser.parse_args(lines[0][2:]))
    assert settings.models == ["gated.rnn"] and settings.budget == 200_000
    assert search_cli.default_name(parser.parse_args(lines[0][2:])) == lines[1][2]
    report = argparse.ArgumentParser()
    search_report.add_arguments(report)
    report.parse_args(lines[1][2:])
