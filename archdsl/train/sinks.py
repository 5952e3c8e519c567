"""Where a run's metrics go besides ``log.jsonl``: ``--log-to csv`` (built in), ``tensorboard`` or
``wandb`` (optional extras: ``pip install 'archdsl[tensorboard]'`` or ``'archdsl[wandb]'``).

A sink receives the trainer's events: ``step`` (training loss, tokens/s, learning rate), ``eval`` and
``report`` (held-out bits per byte), ``end``. Each is written under the run folder: ``metrics.csv``,
``tensorboard/`` (event files), ``wandb/`` (W&B's run folder; ``WANDB_MODE=offline`` keeps it local,
``wandb sync`` uploads it later; W&B's service writes it in the background, so from Python it is
complete once the process ends or ``wandb.teardown()`` returns, not yet when ``train`` returns).

A fresh run (``--force`` included) starts its sinks empty; a resumed run continues them after its
checkpoint's step, as log.jsonl does: rows of metrics.csv past that step are dropped, TensorBoard is
told to purge its events past it (``purge_step``), and W&B starts a new run of the same name.
"""

from __future__ import annotations

import csv
from pathlib import Path

from archdsl.errors import ArchdslError

KINDS = ("csv", "tensorboard", "wandb")
CSV_NAME = "metrics.csv"
#: the scalars each event contributes (name in the sink -> field of the event)
SCALARS = {
    "step": {"train/loss": "loss", "train/tokens_per_s": "tokens_per_s", "train/lr": "lr"},
    "eval": {"eval/bpb": "val_bpb"},
    "report": {"eval/bpb": "val_bpb"},
}


def check(kinds: list[str]) -> None:
    """Refuse an unknown kind, or one whose package is not installed, before anything runs."""
    for kind in kinds:
        if kind not in KINDS:
            raise ArchdslError(f"--log-to: expected one of {', '.join(KINDS)}, found '{kind}'")
        module = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(kind)
        if module is None:
            continue
        try:
            __import__(module)
        except ImportError:
            raise ArchdslError(
                f"--log-to {kind}: the '{module}' package is not installed",
                hint=f"pip install 'archdsl[{kind}]' (or pip install {module}), or use --log-to csv",
            ) from None


class CsvSink:
    """``metrics.csv``: one row per event with a scalar (event, step, train_s, name, value)."""

    HEADER = ["event", "step", "train_s", "name", "value"]

    def __init__(self, out: Path, append: bool, step: int = 0):
        path = out / CSV_NAME
        kept = _rows_until(path, step) if append and path.exists() else []
        self.file = open(path, "w", newline="")  # noqa: SIM115
        self.writer = csv.writer(self.file)
        self.writer.writerows([self.HEADER, *kept])
        self.file.flush()

    def scalar(self, event: str, step: int, train_s, name: str, value: float) -> None:
        self.writer.writerow([event, step, "" if train_s is None else train_s, name, value])
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _rows_until(path: Path, step: int) -> list[list[str]]:
    """The rows of an earlier metrics.csv up to ``step`` (those after it are redone by the resume)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [r for r in rows if len(r) == len(CsvSink.HEADER) and r[1].isdigit() and int(r[1]) <= step]


class TensorBoardSink:
    def __init__(self, out: Path, config: dict, append: bool, step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        folder = out / "tensorboard"
        if not append:  # a replaced run's curves would show beside this one's
            for old in folder.glob("events.out.tfevents.*"):
                old.unlink()
        # resuming: TensorBoard hides the events past the checkpoint that the earlier segment wrote
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=step + 1 if append else None)
        if not append:
            self.writer.add_text("config", f"```\n{config}\n```")

    def scalar(self, event: str, step: int, train_s, name: str, value: float) -> None:
        self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, out: Path, config: dict):
        import wandb

        # create_new: one run per sink, so runs of one process (a search's trials) never end each other's
        self.run = wandb.init(dir=str(out), name=out.name, config=config, reinit="create_new")

    def scalar(self, event: str, step: int, train_s, name: str, value: float) -> None:
        self.run.log({name: value}, step=step)

    def close(self) -> None:
        self.run.finish()


class Sinks:
    """The sinks of one run, fed with the trainer's events."""

    def __init__(self, kinds: list[str], out: Path, config: dict, append: bool = False, step: int = 0):
        """``append``: a resumed run, continuing after its checkpoint's ``step``."""
        check(kinds)
        self.sinks = []
        for kind in dict.fromkeys(kinds):
            if kind == "csv":
                self.sinks.append(CsvSink(out, append, step))
            elif kind == "tensorboard":
                self.sinks.append(TensorBoardSink(out, config, append, step))
            else:
                self.sinks.append(WandbSink(out, config))

    def event(self, event: str, fields: dict) -> None:
        for name, key in SCALARS.get(event, {}).items():
            value = fields.get(key)
            if isinstance(value, (int, float)) and fields.get("step") is not None:
                for sink in self.sinks:
                    sink.scalar(event, int(fields["step"]), fields.get("train_s"), name, float(value))

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []
