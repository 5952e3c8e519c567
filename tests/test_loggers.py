"""``--log-to tensorboard`` and ``--log-to wandb`` with the real packages: a tiny training run's
event file read back with TensorBoard's own reader, and W&B's offline run file read back record by
record, hold the losses and held-out scores of log.jsonl. Each test skips when its package is
missing (``pip install 'archdsl[dev]'`` installs both)."""

from __future__ import annotations

import csv
import json
import os
import signal
import struct
from pathlib import Path

import pytest

from archdsl import cli

ROOT = Path(__file__).resolve().parent.parent
CORPUS = str(ROOT / "tests" / "data" / "corpus-val.txt.xz")
TINY = ["--preset", "test", "--depth", "1", "--batch", "2", "--seq", "8", "--eval-bytes", "64"]


pytestmark = pytest.mark.usefixtures("cache")  # each test its own kernel cache (conftest.py)


def train(out: Path, *extra: str) -> int:
    argv = ["train", "e88", *TINY, "--lr", "3e-2", "--device", "cpu", "--data", CORPUS, "--log-every", "2"]
    return cli.main([*argv, "--eval-every", "2", "--out", str(out), "--no-progress", *extra])


def logged(out: Path) -> dict[str, dict[int, float]]:
    """log.jsonl's training losses and held-out scores by step, as the sinks name them."""
    found: dict[str, dict[int, float]] = {"train/loss": {}, "eval/bpb": {}}
    for line in (out / "log.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "step":
            found["train/loss"][e["step"]] = e["loss"]
        elif e["event"] == "eval":
            found["eval/bpb"][e["step"]] = e["val_bpb"]
    return found


# ---- TensorBoard ---------------------------------------------------------------------------------
def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()  # purges the events a resumed run's purge_step hides, as TensorBoard does
    out: dict[str, dict[int, float]] = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        assert len({e.step for e in events}) == len(events), f"{tag}: a step logged twice"
        out[tag] = {e.step: e.value for e in events}
    return out


def test_tensorboard_event_file_holds_the_logged_metrics(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'archdsl[dev]')")
    out = tmp_path / "run"
    assert train(out, "--steps", "6", "--log-to", "tensorboard") == 0
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    scalars, want = tensorboard_scalars(out / "tensorboard"), logged(out)
    assert sorted(want["train/loss"]) == [2, 4, 6] and sorted(want["eval/bpb"]) == [2, 4, 6]
    for tag in ("train/loss", "eval/bpb"):
        assert scalars[tag] == pytest.approx(want[tag], rel=1e-6)  # float32 in the event file
    assert set(scalars) >= {"train/tokens_per_s", "train/lr"}

    # a run replaced with --force leaves only its own events, not the old run's beside them
    assert train(out, "--steps", "4", "--force", "--lr", "1e-2", "--log-to", "tensorboard") == 0
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert tensorboard_scalars(out / "tensorboard")["train/loss"] == pytest.approx(
        logged(out)["train/loss"], rel=1e-6
    )


def test_a_resumed_run_continues_its_sinks_after_the_checkpoint(tmp_path):
    """A run killed after its checkpoint leaves metrics past it; the resume redoes those steps, and
    metrics.csv and TensorBoard then hold each step once, with the resumed values, as log.jsonl."""
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'archdsl[dev]')")
    from torch.utils.tensorboard import SummaryWriter

    from archdsl.lm.config import ModelConfig
    from archdsl.train.trainer import TrainConfig
    from archdsl.train.trainer import train as train_api

    out = tmp_path / "run"
    mc = ModelConfig("e88", preset="test", depth=1)
    base = dict(steps=8, batch=2, seq=8, eval_bytes=64, lr=3e-2, device="cpu", data=[CORPUS], log_every=2)
    base.update(out=str(out), progress=False, warm_steps=1, log_to=["tensorboard", "csv"])

    def stop(fraction, bpb):
        os.kill(os.getpid(), signal.SIGTERM)  # a checkpoint at step 4, then the run stops

    cut = train_api(mc, TrainConfig(**base, report_fractions=(0.5,)), on_report=stop)
    assert cut.status == "interrupted" and cut.steps == 4
    with open(out / "metrics.csv", "a", newline="") as f:  # what a killed run wrote after it
        csv.writer(f).writerow(["step", 6, 1.0, "train/loss", 99.0])
    stale = SummaryWriter(str(out / "tensorboard"))
    stale.add_scalar("train/loss", 99.0, 6)
    stale.close()
    done = train_api(mc, TrainConfig(**base, report_fractions=(0.5,), resume=True))
    assert done.status == "ok" and done.steps == 8
    want = logged(out)["train/loss"]
    assert sorted(want) == [2, 4, 6, 8] and 99.0 not in want.values()
    with open(out / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["name"] == "train/loss"]
    assert {int(r["step"]): float(r["value"]) for r in rows} == want and len(rows) == 4
    assert tensorboard_scalars(out / "tensorboard")["train/loss"] == pytest.approx(want, rel=1e-6)


# ---- Weights & Biases, offline -------------------------------------------------------------------
def wandb_records(path: Path) -> list:
    """The protobuf records of a ``.wandb`` run file: a 7-byte header (``:W&B``, magic, version),
    then LevelDB-log blocks of 32 KiB whose records (crc, length, type) may be split in pieces."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pos, parts = [], 7, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # a block's tail too short for a header is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def wandb_history(run_file: Path) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") != "history":
            continue
        items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
        step = items.get("_step", record.history.step.num)
        for key, value in items.items():
            if not key.startswith("_"):
                out.setdefault(key, {})[int(step)] = value
    return out


def test_wandb_offline_run_holds_the_logged_metrics(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install 'archdsl[dev]')")
    monkeypatch.setenv("WANDB_MODE", "offline")  # nothing leaves the machine
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    assert train(out, "--steps", "6", "--log-to", "wandb") == 0
    wandb.teardown()  # W&B's service writes the run file in the background: wait for it (exit does)
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, list((out / "wandb").rglob("*"))
    history, want = wandb_history(runs[0]), logged(out)
    for tag in ("train/loss", "eval/bpb"):
        assert history[tag] == pytest.approx(want[tag], rel=1e-9), tag
    run = next(r.run for r in wandb_records(runs[0]) if r.WhichOneof("record_type") == "run")
    config = run.config
    saved = {i.key: json.loads(i.value_json) for i in config.update}
    assert saved["train"]["steps"] == 6 and saved["model"]["model"] == "e88"
