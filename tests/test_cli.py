"""One CLI: one meaning per flag, --version, did-you-mean for commands, defaults and an example in
every --help, and nothing left behind by a failed command."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

from archdsl import cli

ROOT = Path(__file__).resolve().parent.parent


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    installed = cli.version()
    project = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert out == f"archdsl {installed}" and installed == project


def test_unknown_command_says_what_was_meant(capsys):
    assert cli.main(["trian", "e88"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "did you mean 'train'?" in err


@pytest.mark.parametrize(
    "argv, instead",
    [
        (["verify", "e88", "--steps", "3"], "did you mean --seq"),
        (["verify", "e88", "--steps=3"], "did you mean --seq"),
        (["search", "e88", "--budget", "1M", "--out", "x"], "did you mean --runs"),
        (["report", "s", "--out", "x"], "did you mean --runs"),
    ],
)
def test_a_flag_that_meant_something_else_is_refused(argv, instead, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and instead in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def parser_of(command: str) -> argparse.ArgumentParser:
    module = importlib.import_module(cli.COMMANDS[command][0])
    p = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    module.add_arguments(p)
    return p


@pytest.mark.parametrize("command", ["train", "bench", "search"])
def test_data_takes_several_files_in_every_command(command):
    p = parser_of(command)
    base = {"train": ["e88", "--steps", "1"], "bench": ["e88"], "search": ["e88"]}[command]
    assert p.parse_args([*base, "--data", "a", "b"]).data == ["a", "b"]
    assert p.parse_args([*base, "--data", "a", "--data", "b"]).data == ["a", "b"]


@pytest.mark.parametrize("command", ["verify", "train", "bench", "search"])
def test_seq_is_a_sequence_length_everywhere(command):
    p = parser_of(command)
    (action,) = [a for a in p._actions if "--seq" in a.option_strings]
    assert "bytes per" in action.help or "sequence length" in action.help
    steps = [a for a in p._actions if "--steps" in a.option_strings]
    assert all("training steps" in a.help for a in steps)


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_help_shows_defaults_and_an_example(command, capsys):
    assert cli.main([command, "--help"]) == 0
    text = capsys.readouterr().out
    example = re.search(r"example:\n  (archdsl \S+)", text)
    assert example and example.group(1) == f"archdsl {command}"
    for action in parser_of(command)._actions:
        if not action.option_strings or action.default in (None, False, [], argparse.SUPPRESS):
            continue
        if action.default is True:
            continue
        flag = action.option_strings[-1]
        at = re.search(rf"\n  (?:-\w, )?{re.escape(flag)}\b", text)
        block = text[at.start() + 1 :].split("\n  -")[0]
        assert "default" in block, f"{command} {flag}: no default shown"


def test_a_failed_train_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "e88", "--params", "1K", "--minutes", "1"]) == 2
    assert "no width gives 1,000 parameters" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert cli.main(["train", "e88", "--preset", "demo", "--data", "missing.txt", "--steps", "1"]) == 2
    assert cli.main(["train", "e88", "--steps", "1", "--data", "missing.txt", "--out", "a/b"]) == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a"] or not any(tmp_path.rglob("*"))


def test_a_failed_command_keeps_what_was_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    keep = tmp_path / "runs" / "mine"
    keep.mkdir(parents=True)
    (keep / "notes.txt").write_text("mine")
    assert cli.main(["train", "e88", "--steps", "1", "--data", "missing.txt", "--out", "runs/mine"]) == 2
    assert (keep / "notes.txt").read_text() == "mine"


def test_resuming_a_study_that_does_not_exist_makes_no_journal(tmp_path, monkeypatch, capsys):
    pytest.importorskip("optuna")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["search", "--resume", "--study", "zz"]) == 2
    assert "no study 'zz'" in capsys.readouterr().err
    assert not any(tmp_path.rglob("*"))
