"""What a training run leaves for its user: metrics.csv (--log-to), evaluations during the run
(--eval-every), loss.png, and the evaluated weights with their config, loaded by load_run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from archdsl import cli
from archdsl.errors import ArchdslError
from archdsl.train.data import ByteData, bits_per_byte
from archdsl.train.export import load_run

ROOT = Path(__file__).resolve().parent.parent
CORPUS = str(ROOT / "tests" / "data" / "corpus-val.txt.xz")
TINY = ["--preset", "test", "--depth", "1", "--batch", "2", "--seq", "8", "--eval-bytes", "64"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    argv = ["train", "e88", *TINY, "--steps", "6", "--lr", "3e-2", "--device", "cpu", "--data", CORPUS]
    argv += ["--log-to", "csv", "--eval-every", "2", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    return out


def test_metrics_csv_and_evaluations_during_the_run(run):
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    evals = [int(r["step"]) for r in rows if r["name"] == "eval/bpb"]
    assert evals == [2, 4, 6]  # every 2 steps, and the final one
    assert {r["name"] for r in rows} >= {"train/loss", "train/tokens_per_s", "eval/bpb"}
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if e["event"] == "eval"] == [2, 4, 6]


def test_loss_plot_is_written(run):
    import matplotlib.image

    pixels = matplotlib.image.imread(run / "loss.png")
    rgb = pixels[..., :3]
    assert ((rgb.max(-1) - rgb.min(-1)) > 0.25).sum() > 30  # a coloured curve is drawn


def held_out_bpb(model, config) -> float:
    cfg = config["train_config"]
    data = ByteData(cfg["data"], cfg["val"], val_fraction=cfg["val_fraction"], seed=cfg["seed"])
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in data.eval_batches(cfg["eval_bytes"], cfg["batch"], cfg["seq"], torch.device("cpu")):
            logits = model(x)
            total += F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
            )
            n += y.numel()
    return bits_per_byte(float(total), n)


def test_load_run_gives_the_weights_that_were_evaluated(run):
    """Schedule-free trains y and evaluates the average x: the exported model scores exactly the
    held-out bits per byte the run reported, and the checkpoint's training weights do not."""
    config = json.loads((run / "config.json").read_text())
    result = json.loads((run / "result.json").read_text())
    model = load_run(run)
    assert not model.training and config["weights"].startswith("evaluated")
    assert held_out_bpb(model, config) == pytest.approx(result["val_bpb"], abs=1e-5)
    from archdsl.train.checkpoint import read

    model.load_state_dict(read(run / "checkpoint.safetensors")["model"])  # the trained y
    assert held_out_bpb(model, config) != pytest.approx(result["val_bpb"], abs=1e-5)


def test_load_run_of_a_folder_without_a_model(tmp_path):
    with pytest.raises(ArchdslError, match="holds no exported model"):
        load_run(tmp_path)


@pytest.mark.parametrize("kind", ["tensorboard", "wandb"])
def test_an_uninstalled_logger_is_refused_before_the_run(kind, tmp_path, monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def no_such_module(name, *args, **kwargs):
        if name == kind:
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_such_module)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "e88", *TINY, "--steps", "1", "--device", "cpu", "--log-to", kind]) == 2
    err = capsys.readouterr().err
    assert f"--log-to {kind}: the '{kind}' package is not installed" in err and f"archdsl[{kind}]" in err
    assert not (tmp_path / "runs").exists()
