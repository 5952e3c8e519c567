"""Safe files and honest runs: a checkpoint or a cached kernel never runs code planted in it; a resume
is keyed by the content of spec and data; one run per --out, none overwritten by accident; the log
and the curve stay exact across a resume; JSON is strict; damaged files are one-line errors."""

from __future__ import annotations

import json
import lzma
import os
import pickle
import signal
import stat
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_train import _poisoned

from archdsl import cli
from archdsl.errors import ArchdslError
from archdsl.lm import zoo
from archdsl.lm.config import ModelConfig
from archdsl.train import checkpoint, data, trainlog
from archdsl.train.trainer import TrainConfig, Trainer, train

CORPUS = Path(__file__).resolve().parent / "data"
SPEC = Path(__file__).resolve().parent.parent / "specs" / "e88.rnn"
CKPT = "checkpoint.safetensors"
MARK = "archdsl-test-planted-code-ran"


pytestmark = pytest.mark.usefixtures("cache")  # each test its own kernel cache (conftest.py)


@pytest.fixture
def text(tmp_path) -> Path:
    """A small plain-text copy of the test corpus (30 KB)."""
    with lzma.open(CORPUS / "corpus-val.txt.xz") as f:
        (tmp_path / "val.txt").write_bytes(f.read(30_000))
    return tmp_path / "val.txt"


def cfg(out, data_file, **kw) -> TrainConfig:
    base = dict(
        batch=4,
        seq=16,
        lr=3e-3,
        device="cpu",
        threads=1,
        eval_bytes=256,
        log_every=2,
        out=str(out),
        progress=False,
        warm_steps=0,
        data=[str(data_file)],
        steps=4,
    )
    return TrainConfig(**{**base, **kw})


MC = ModelConfig("e88", preset="demo", depth=1)
ARGV = ["train", "e88", "--preset", "demo", "--depth", "1", "--batch", "4", "--seq", "16", "--device", "cpu"]
ARGV += ["--threads", "1", "--eval-bytes", "256", "--no-progress"]


def run_cli(argv, capsys) -> tuple[int, str]:
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


class Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, where: Path):
        self.where = where

    def __reduce__(self):
        return (Path.touch, (self.where,))


# ---- safe files -----------------------------------------------------------------------------------
def test_resume_never_unpickles_a_planted_checkpoint(tmp_path, text):
    out, marker = tmp_path / "run", tmp_path / MARK
    out.mkdir()
    for name in ("checkpoint.pt", CKPT):  # the old and the new file name
        with open(out / name, "wb") as f:
            pickle.dump({"format": 1, "x": Payload(marker)}, f)
        torch.save({"format": 1, "x": Payload(marker)}, out / f"{name}.torch")
    os.replace(out / "checkpoint.pt.torch", out / "checkpoint.pt")  # the way torch.save writes it
    with pytest.raises(ArchdslError, match="not a readable archdsl checkpoint"):
        train(MC, cfg(out, text, resume=True))
    assert not marker.exists()


def test_a_planted_kernel_file_is_replaced_not_imported(cache, tmp_path):
    from archdsl.codegen.run import runtime

    source = "VALUE = 42\n"
    marker = tmp_path / MARK
    real = runtime.load_module(source, "planted_probe")[2]  # where the cache keeps this source
    planted = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nVALUE = 666\n"
    real.write_text(planted)
    runtime.sys.modules.pop(f"archdsl_kernels.{real.stem}")
    module, digest, path = runtime.load_module(source, "planted_probe")
    assert path == real and not marker.exists() and module.VALUE == 42
    assert path.read_text() == source
    assert stat.S_IMODE(runtime.cache_dir().stat().st_mode) == 0o700


def test_checkpoint_round_trip_keeps_every_kind_of_value(tmp_path, text):
    r = train(MC, cfg(tmp_path, text))
    blob = checkpoint.read(tmp_path / CKPT)
    assert blob["progress"]["step"] == r.steps == 4
    assert isinstance(blob["rng"]["python"], tuple) and blob["rng"]["numpy"][1].dtype.name == "uint32"
    assert set(blob["optimizer"]["state"]) == set(range(len(blob["optimizer"]["state"])))  # int keys
    raw = (tmp_path / CKPT).read_bytes()
    assert b"NaN" not in raw and b"\x80\x04" not in raw[:16]  # JSON header, not a pickle


# ---- resume keyed by content ----------------------------------------------------------------------
def test_resume_accepts_the_same_data_under_another_path(tmp_path, text, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train(MC, cfg("run", text, data=["val.txt"], steps=4, report_fractions=(0.5,)))
    done = train(MC, cfg("run", text, data=["./val.txt"], steps=4, report_fractions=(0.5,), resume=True))
    assert done.status == "ok" and done.steps == 4


def test_resume_refuses_replaced_data(tmp_path, text):
    train(MC, cfg(tmp_path / "run", text))
    text.write_bytes(text.read_bytes()[::-1])
    with pytest.raises(ArchdslError, match="the data files' contents changed"):
        train(MC, cfg(tmp_path / "run", text, resume=True))


@pytest.mark.parametrize(
    "old, new",
    [
        ("choice nonlin in {tanh, identity} = tanh", "choice nonlin in {tanh, identity} = identity"),
        ("let nv = n * expansion", "let nv = 2 * n * expansion"),  # the shapes change too
    ],
)
def test_resume_refuses_an_edited_spec(tmp_path, text, capsys, old, new):
    spec = tmp_path / "mine.rnn"
    spec.write_text(SPEC.read_text())
    out = tmp_path / "run"
    argv = [ARGV[0], str(spec), *ARGV[2:], "--data", str(text), "--out", str(out), "--steps", "4"]
    assert run_cli(argv, capsys)[0] == 0
    spec.write_text(spec.read_text().replace(old, new))
    rc, err = run_cli([*argv, "--resume"], capsys)
    assert rc == 2 and err.startswith("error: ") and "spec text changed" in err, err


def test_a_checkpoint_that_does_not_fit_the_model_is_an_error(tmp_path, text, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    out = tmp_path / "run"
    argv = [*ARGV, "--data", str(text), "--out", str(out), "--steps", "4"]
    assert run_cli(argv, capsys)[0] == 0
    path = out / CKPT
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    name = max(tensors, key=lambda k: tensors[k].numel())  # a weight: reshaped, it no longer fits
    tensors[name] = tensors[name].reshape(-1)[:-1].clone()
    save_file(tensors, str(path), metadata=meta)
    rc, err = run_cli([*argv, "--resume"], capsys)
    assert rc == 2 and err.startswith("error: ") and "does not fit the model" in err, err


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_a_damaged_checkpoint_is_one_error(tmp_path, text, capsys, damage):
    out = tmp_path / "run"
    argv = [*ARGV, "--data", str(text), "--out", str(out), "--steps", "2"]
    assert run_cli(argv, capsys)[0] == 0
    (path,) = out.glob("checkpoint.*")
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[: len(raw) // 2], "random": os.urandom(4096), "empty": b""}[damage])
    rc, err = run_cli([*argv, "--resume"], capsys)
    assert rc == 2 and err.startswith("error: ") and "not a readable archdsl checkpoint" in err, err


# ---- one run per folder -----------------------------------------------------------------------------
def test_a_second_run_on_a_busy_folder_stops_at_once(tmp_path, text, capsys):
    out = tmp_path / "run"
    first = Trainer(MC, cfg(out, text))  # built: it holds the folder until its run ends
    rc, err = run_cli([*ARGV, "--data", str(text), "--out", str(out), "--steps", "2"], capsys)
    assert rc == 2 and f"--out {out} is in use by another run (pid {os.getpid()})" in err, err
    assert first.run().status == "ok"  # the first run is untouched; after it, the folder is free
    assert train(MC, cfg(out, text, resume=True)).status == "ok"


def test_a_finished_run_is_replaced_only_with_force(tmp_path, text, capsys):
    out = tmp_path / "run"
    argv = [*ARGV, "--data", str(text), "--out", str(out)]
    assert run_cli([*argv, "--steps", "2"], capsys)[0] == 0
    before = (out / "result.json").read_bytes()
    rc, err = run_cli([*argv, "--steps", "4"], capsys)
    assert rc == 2 and f"--out {out} already holds a run (status ok)" in err and "--force" in err, err
    assert (out / "result.json").read_bytes() == before
    assert run_cli([*argv, "--steps", "4", "--force"], capsys)[0] == 0
    assert json.loads((out / "result.json").read_text())["steps"] == 4
    events = [json.loads(line)["event"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert events.count("start") == 1  # the old run's log went with it


# ---- exact logs and curves across a resume ------------------------------------------------------------
def test_resume_cuts_the_log_back_to_the_checkpoint(tmp_path, text):
    """What ``kill -9`` leaves: log lines of steps after the last checkpoint, the last one torn."""
    out, log = tmp_path / "run", tmp_path / "run" / "log.jsonl"
    run = cfg(out, text, steps=8, log_every=2, report_fractions=(0.5,))
    assert train(MC, run, on_report=_sigterm).steps == 4  # the checkpoint is at step 4
    with open(log, "a") as f:
        f.writelines(json.dumps({"event": "step", "step": s, "loss": 9.0}) + "\n" for s in (6, 8))
        f.write('{"event": "step", "st')
    assert train(MC, replace(run, resume=True)).steps == 8
    events = [json.loads(line) for line in log.read_text().splitlines()]  # no torn line is left
    assert [e["step"] for e in events if e["event"] == "step"] == [2, 4, 6, 8]
    assert 9.0 not in [e.get("loss") for e in events]


def _sigterm(fraction, bpb):
    os.kill(os.getpid(), signal.SIGTERM)  # arrives during this step: checkpoint, then stop


def test_a_signal_loses_no_curve_point(tmp_path, text):
    """Stopped between two curve points and resumed, the curve is the uninterrupted run's."""
    whole = train(MC, cfg(tmp_path / "whole", text, steps=15, log_every=5, report_fractions=(0.4,)))
    run = cfg(tmp_path / "cut", text, steps=15, log_every=5, report_fractions=(0.4,))
    cut = train(MC, run, on_report=_sigterm)
    assert cut.status == "interrupted" and cut.steps == 6  # between the curve's points at 5 and 10
    done = train(MC, replace(run, resume=True))
    assert [c[1:] for c in done.curve] == [c[1:] for c in whole.curve]


# ---- strict JSON -----------------------------------------------------------------------------------
def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_nonfinite_numbers_are_strict_json_and_read_back(tmp_path, text, monkeypatch):
    monkeypatch.setattr(zoo, "build_model", _poisoned("forward", after=2))
    r = train(ModelConfig("e88", preset="demo", depth=2), cfg(tmp_path, text, steps=6))
    assert r.status == "nonfinite"
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    for line in lines:
        _strict(line)
    _strict((tmp_path / "result.json").read_text())
    (event,) = [e for e in map(trainlog.loads, lines) if e["event"] == "nonfinite"]
    assert event["loss"] != event["loss"]  # NaN, read back as a float
    assert trainlog.loads(trainlog.dumps([float("inf"), -float("inf"), "x"])) == [
        float("inf"),
        -float("inf"),
        "x",
    ]


# ---- data files ------------------------------------------------------------------------------------
def test_a_truncated_xz_is_an_error_and_leaves_no_temporary_file(tmp_path, cache):
    whole = (CORPUS / "corpus-val.txt.xz").read_bytes()
    cut = tmp_path / "cut.txt.xz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ArchdslError, match="not a valid .xz file"):
        data.open_bytes(cut)
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_an_unreadable_data_file_is_an_error(tmp_path, text, monkeypatch):
    if os.geteuid() == 0:  # root reads a file of mode 000: make the read itself fail
        real = data.np.memmap

        def denied(path, *a, **kw):
            if Path(path) == text:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, *a, **kw)

        monkeypatch.setattr(data.np, "memmap", denied)
    else:
        text.chmod(0)
    with pytest.raises(ArchdslError, match=f"cannot read data file {text}"):
        data.open_bytes(text)
