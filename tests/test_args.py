"""Every command refuses a meaningless flag value with one ``error:`` line and exit status 2.

The cases of the adversarial review (issue 11: "Tracebacks instead of errors", "Accepted though
meaningless") one by one, then a property test that drives each command's argv with generated bad
values of every numeric and path flag. The commands run in-process through ``archdsl.cli.main``; a
command's ``run`` is replaced by one that fails the test, so a value that gets past the argument
check is caught at once instead of training or searching for real.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archdsl.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent


def call(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def assert_one_error(rc: int, err: str, argv) -> None:
    assert rc == 2, (argv, rc, err)
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, (argv, err)


class Accepted(AssertionError):
    pass


@pytest.fixture
def no_run(monkeypatch):
    """Each command's ``run`` fails the test: a value must be refused while the arguments are read."""

    def refuse(args):
        raise Accepted(f"accepted: {vars(args)}")

    for module_name, _ in COMMANDS.values():
        monkeypatch.setattr(importlib.import_module(module_name), "run", refuse)


@pytest.fixture
def a_file(tmp_path) -> Path:
    f = tmp_path / "a-file"
    f.write_text("not a directory\n")
    return f


# ---- the listed cases, one by one ---------------------------------------------------------------
FLAG_CASES = [
    ["train", "e88", "--steps", "1", "--heads", "0"],
    ["train", "e88", "--steps", "1", "--n", "0"],
    ["train", "e88", "--steps", "1", "--threads", "-1"],
    ["train", "e88", "--steps", "1", "--threads", "0"],
    ["train", "e88", "--minutes", "inf"],
    ["train", "e88", "--minutes", "nan"],
    ["train", "e88", "--minutes=-1"],
    ["train", "e88", "--steps", "1", "--lr=-1"],
    ["train", "e88", "--steps", "1", "--warmup=-1"],
    ["train", "e88", "--steps", "1", "--checkpoint-every=-1"],
    ["train", "e88", "--steps", "1", "--device", "gpu"],
    ["verify", "e88", "--seq", "0"],
    ["verify", "e88", "--seq=-3"],
    ["verify", "e88", "--batch", "0"],
    ["verify", "e88", "--device", "gpu"],
    ["verify", "e88", "--chunk", "0"],
    ["compile", "e88", "--chunk", "0"],
    ["compile", "e88", "--chunk=-1"],
    ["compile", "e88", "--warps", "0"],
    ["compile", "e88", "--tile", "3"],
    ["search", "--budget", "100K", "--storage", "garbage"],
    ["search", "--budget", "100K", "--minutes", "inf"],
    ["bench", "e88", "--minutes", "nan"],
]


@pytest.mark.parametrize("argv", FLAG_CASES, ids=lambda a: " ".join(a))
def test_listed_flag_values_are_refused(argv, no_run, tmp_path):
    out = {"train": "--out", "bench": "--out", "search": "--runs"}
    argv = argv + ([out[argv[0]], str(tmp_path / "out")] if argv[0] in out else [])
    rc, _, err = call(argv)
    assert_one_error(rc, err, argv)


def test_out_and_storage_paths_are_refused(no_run, a_file, tmp_path):
    under_file = str(a_file / "sub")
    for argv in (
        ["train", "e88", "--steps", "1", "--out", str(a_file)],  # an existing file
        ["train", "e88", "--steps", "1", "--out", under_file],  # cannot be made
        ["compile", "e88", "-o", under_file],
        ["search", "--budget", "100K", "--storage", str(tmp_path)],  # a directory
        ["report", "x", "--dest", str(a_file)],
    ):
        rc, _, err = call(argv)
        assert_one_error(rc, err, argv)
    rc, _, err = call(["search", "--budget", "100K", "--storage", "garbage", "--runs", str(tmp_path)])
    assert "postgresql://" in err and ".journal" in err  # says what it accepts
    assert not (Path.cwd() / "garbage").exists()


def test_report_on_a_file_that_is_not_a_journal(tmp_path):
    pytest.importorskip("optuna")
    for name, text in (("notes.txt", "hello\n"), ("study.journal", "\x00\x01garbage")):
        f = tmp_path / name
        f.write_text(text)
        rc, _, err = call(["report", str(f)])
        assert_one_error(rc, err, name)
        assert "not a study journal" in err


def test_budget_solver_refuses_zero_heads_per_state(tmp_path):
    from archdsl.errors import ArchdslError
    from archdsl.lm.budget import solve
    from archdsl.lm.config import ModelConfig

    with pytest.raises(ArchdslError, match="must be positive"):
        solve(ModelConfig(model="e88", sets={"n": 0}), 100_000)


def test_batch_times_seq_is_checked_against_free_memory(tmp_path):
    argv = ["train", "e88", "--steps", "1", "--batch", "100000000", "--device", "cpu"]
    rc, _, err = call([*argv, "--out", str(tmp_path / "r"), "--no-progress"])
    assert_one_error(rc, err, argv)
    assert "GiB free" in err and "--batch 100000000" in err
    assert not (tmp_path / "r").exists()  # refused before anything was made


def test_closed_pipe_is_no_traceback():
    read, write = os.pipe()
    os.close(read)  # the reader has left before the first byte
    for argv in (["-h"], ["train", "-h"]):
        r = subprocess.run(
            [sys.executable, "-m", "archdsl.cli", *argv], stdout=write, stderr=subprocess.PIPE, text=True
        )
        assert r.returncode == 0 and "Traceback" not in r.stderr and "Exception" not in r.stderr, r.stderr
    os.close(write)


# ---- bad specs: said at their line, not a traceback or a NaN ------------------------------------
SPEC = "rnn {name}\nhyper dim = 8\naxis i = dim\naxis j = dim\naxis k = 2\nproject x -> wx[i]\n{body}"


def spec_file(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.rnn"
    path.write_text(SPEC.format(name=name, body=body))
    return str(path)


def test_initialiser_that_yields_nan_names_its_line(tmp_path):
    from archdsl.errors import ArchdslError
    from archdsl.lang.checker import instantiate
    from archdsl.lang.parser import parse_file
    from archdsl.layer import RecurrentLayer

    body = (
        "param a[i] = logit(linspace[i](0.8, 1.5))\nstate h[i]\nh' = sigmoid(a) * h + wx\ny = h'\noutput y\n"
    )
    path = spec_file(tmp_path, "naninit", body)
    layer = instantiate(parse_file(path), None, {}).layer
    with pytest.raises(ArchdslError) as e:
        RecurrentLayer(layer, seed=0)
    assert "'logit'" in e.value.message and "0.8 .. 1.5" in e.value.message
    assert e.value.span is not None and e.value.span.line == 7


def test_xavier_needs_a_matrix(tmp_path):
    step = "h' = tanh(wx + sum[j](sum[k](W) * h[j]))"
    body = f"param W[k, i, j] = xavier()\nstate h[i]\n{step}\ny = h'\noutput y\n"
    rc, _, err = call(["check", spec_file(tmp_path, "xavier3", body)])
    assert_one_error(rc, err, "xavier3")
    assert "'xavier' initialises a matrix; the parameter has 3 axes" in err


def test_state_that_cannot_fit_a_program_is_an_error():
    from archdsl.codegen import build_cell

    from archdsl.errors import ArchdslError
    from archdsl.lang.checker import instantiate
    from archdsl.lang.parser import parse_file
    from archdsl.lang.specs_path import resolve_spec

    layer = instantiate(parse_file(resolve_spec("e88")), None, {"n": "2000000"}).layer  # 2^21 keys
    with pytest.raises(ArchdslError, match=r"state S\[h, i, j\] cannot fit"):
        build_cell(layer, 16, None, None)


def test_verify_says_what_it_cannot_verify(tmp_path):
    body = "state h[i]\nh' = tanh(wx)\ny = h'\noutput y\n"  # the update ignores the state
    rc, out, err = call(["verify", spec_file(tmp_path, "nostate", body), "--device", "cpu", "--seq", "3"])
    assert rc == 0, err
    assert "Traceback" not in err
    assert "n/a  dh0 h" in out and "not verified" in out


# ---- the property: every numeric and path flag of every command ---------------------------------
ints_below = lambda top: st.integers(-(10**12), top).map(str)  # noqa: E731
NOT_A_NUMBER = st.sampled_from(["", "abc", "1O", "0x", "1,5", "one", "- 1"])
BAD = {
    "pos_int": ints_below(0) | NOT_A_NUMBER | st.sampled_from(["1.5", "inf", "nan", "2e3"]),
    "nonneg_int": ints_below(-1) | NOT_A_NUMBER | st.sampled_from(["0.5", "inf"]),
    "pos_float": st.floats(max_value=0.0, allow_nan=False).map(repr)
    | st.sampled_from(["inf", "-inf", "nan", "NaN", "1e999"])
    | NOT_A_NUMBER,
    "nonneg_float": st.floats(max_value=-1e-9, allow_nan=False).map(repr)
    | st.sampled_from(["inf", "nan", "-inf"])
    | NOT_A_NUMBER,
    "fraction": st.sampled_from(["0", "1", "1.5", "-0.01", "150%", "nan", "inf", "abc", "%", ""]),
    "pow2": st.integers(-64, 4096).filter(lambda n: n < 1 or n & (n - 1)).map(str) | NOT_A_NUMBER,
    "count": st.sampled_from(["0", "-5", "abc", "1e-3", "inf", "nan", "5X", "0.4", ""]),
    "device": st.sampled_from(["gpu", "tpu", "cuda:x", "cuda0", "", "CPU ", "mps"]),
    "dir": st.sampled_from(["FILE", "FILE/sub", "FILE/a/b"]),
    "storage": st.sampled_from(["garbage", "DIR", "ftp://host/x", "study.db", "FILE/sub.journal"]),
    "doc_sep": st.sampled_from(["", "\\q", "a\\", "\\x4", "\\xZZ", "\\u0000"]),
    "modes": st.sampled_from(["", ",", "eagre", "eager,eager", "eager,graphs", "compile;eager", "EAGER"]),
}
TRAIN_BUDGET = ("--minutes", "--steps", "--tokens")
COMMAND_FLAGS = {
    "check": (["e88"], {"--depth": "pos_int"}),
    "compile": (
        ["e88"],
        {"--out": "dir", "--chunk": "pos_int", "--tile": "pow2", "--warps": "pow2"},
    ),
    "verify": (
        ["e88"],
        {
            "--device": "device",
            "--batch": "pos_int",
            "--seq": "pos_int",
            "--chunk": "pos_int",
            "--seed": "nonneg_int",
        },
    ),
    "train": (
        ["e88"],
        {
            "--params": "count",
            "--dim": "pos_int",
            "--heads": "pos_int",
            "--n": "pos_int",
            "--expansion": "pos_float",
            "--depth": "pos_int",
            "--align": "pos_int",
            "--minutes": "pos_float",
            "--steps": "pos_int",
            "--tokens": "count",
            "--device": "device",
            "--out": "dir",
            "--batch": "pos_int",
            "--seq": "pos_int",
            "--lr": "pos_float",
            "--warmup": "nonneg_int",
            "--seed": "nonneg_int",
            "--eval-bytes": "count",
            "--checkpoint-every": "nonneg_float",
            "--log-every": "pos_int",
            "--eval-every": "pos_int",
            "--threads": "pos_int",
            "--doc-sep": "doc_sep",
        },
    ),
    "bench": (
        ["e88"],
        {
            "--params": "count",
            "--align": "pos_int",
            "--tolerance": "pos_float",
            "--depth": "pos_int",
            "--minutes": "pos_float",
            "--steps": "pos_int",
            "--tokens": "count",
            "--batch": "pos_int",
            "--seq": "pos_int",
            "--device": "device",
            "--seed": "nonneg_int",
            "--modes": "modes",
            "--out": "dir",
            "--timeout": "pos_float",
        },
    ),
    "search": (
        ["--budget", "100K"],
        {
            "--budget": "count",
            "--minutes": "pos_float",
            "--trials": "pos_int",
            "--storage": "storage",
            "--runs": "dir",
            "--workers": "pos_int",
            "--seeds": "nonneg_int",
            "--top-k": "pos_int",
            "--batch": "pos_int",
            "--seq": "pos_int",
            "--eval-bytes": "pos_int",
            "--device": "device",
            "--align": "pos_int",
            "--seed": "nonneg_int",
            "--trial-timeout": "pos_float",
            "--time-limit": "pos_float",
            "--tolerance": "fraction",
        },
    ),
    "report": (["some-study"], {"--storage": "storage", "--runs": "dir", "--dest": "dir"}),
    "sample": (
        ["runs/demo"],
        {
            "--bytes": "pos_int",
            "--temperature": "nonneg_float",
            "--top-k": "pos_int",
            "--seed": "nonneg_int",
            "--device": "device",
        },
    ),
}
CASES = [(cmd, flag, kind) for cmd, (_, flags) in COMMAND_FLAGS.items() for flag, kind in flags.items()]


def test_every_flag_with_a_type_is_covered():
    """A numeric or path flag added to a command without a case here fails this test."""
    import argparse

    for cmd, (module_name, _) in COMMANDS.items():
        parser = argparse.ArgumentParser()
        importlib.import_module(module_name).add_arguments(parser)
        typed = {
            a.option_strings[-1] for a in parser._actions if a.option_strings and a.type not in (None, str)
        }
        typed |= {"--out"} & {s for a in parser._actions for s in a.option_strings}
        assert typed <= set(COMMAND_FLAGS[cmd][1]), (cmd, typed - set(COMMAND_FLAGS[cmd][1]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(CASES), data=st.data())
def test_bad_flag_values_end_in_one_error_line(case, data, no_run, tmp_path_factory):
    cmd, flag, kind = case
    value = data.draw(BAD[kind], label=f"{cmd} {flag}")
    tmp = tmp_path_factory.mktemp("args")
    (tmp / "FILE").write_text("x")
    value = value.replace("FILE", str(tmp / "FILE")) if kind in ("dir", "storage") else value
    value = str(tmp) if value == "DIR" else value
    base, _ = COMMAND_FLAGS[cmd]
    argv = [cmd, *base, f"{flag}={value}"]
    if cmd == "train" and flag not in TRAIN_BUDGET:
        argv.append("--steps=1")
    out = {"train": "--out", "bench": "--out", "search": "--runs"}.get(cmd)
    if out and flag != out:
        argv.append(f"{out}={tmp / 'out'}")
    rc, _, err = call(argv)
    assert_one_error(rc, err, argv)
