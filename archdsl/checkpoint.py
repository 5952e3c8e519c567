"""Checkpoints of a training run, written atomically, and the signal catcher that triggers one.

A checkpoint holds everything a resumed run needs to continue as if it had never stopped: model
and optimizer state, the run's counters (step = the data sampler's position, since a batch is a
function of (seed, step); tokens; timed seconds spent of the budget), the last losses, the curve,
the RNG states, and both configs (a resume must use the same ones).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from archdsl.errors import ArchdslError

FORMAT = 1
# TrainConfig fields a resumed run may change: they do not change what is computed.
FREE_ON_RESUME = {
    "resume",
    "progress",
    "log_every",
    "checkpoint_every",
    "checkpoint",
    "device",
    "out",
    "threads",
}


@dataclass
class Progress:
    """The run's counters: everything a checkpoint needs besides model, optimizer and RNG."""

    step: int = 0
    tokens: int = 0
    train_s: float = 0.0
    wall_s: float = 0.0  # wall seconds of earlier segments of a resumed run
    losses: list[float] = field(default_factory=list)  # the last 100 training losses
    curve: list[tuple[float, int, float]] = field(default_factory=list)
    reports: list[tuple[float, float]] = field(default_factory=list)


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(path: Path, model, optimizer, progress, model_cfg, cfg) -> None:
    """Write the checkpoint to a temporary file, then rename it over ``path``."""
    blob = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "progress": asdict(progress),
        "rng": rng_states(),
        "model_config": _plain(asdict(model_cfg)),
        "train_config": _plain(asdict(cfg)),
    }
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def load(path: Path, model_cfg, cfg) -> dict:
    """Read a checkpoint and check that it belongs to the same run (same model, data and budget)."""
    if not path.is_file():
        raise ArchdslError(
            f"nothing to resume: no checkpoint at {path}", hint="start the run without --resume first"
        )
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if blob.get("format") != FORMAT:
        raise ArchdslError(f"{path}: checkpoint format {blob.get('format')} is not {FORMAT}")
    diffs = _differences(blob["model_config"], _plain(asdict(model_cfg)), set())
    diffs += _differences(blob["train_config"], _plain(asdict(cfg)), FREE_ON_RESUME)
    if diffs:
        raise ArchdslError(
            f"cannot resume {path}: the run was started with different settings: " + "; ".join(diffs),
            hint="resume with the same model, data, budget and training options",
        )
    return blob


def _plain(d: dict) -> dict:
    """JSON-normal form (tuples -> lists), so that saved and given configs compare equal."""
    return json.loads(json.dumps(d, default=str))


def _differences(saved: dict, given: dict, free: set[str]) -> list[str]:
    keys = sorted((saved.keys() | given.keys()) - free)
    return [f"{k} was {saved.get(k)!r}, now {given.get(k)!r}" for k in keys if saved.get(k) != given.get(k)]


class StopSignals:
    """Turns the first SIGINT/SIGTERM into a flag the training loop polls (then checkpoints and
    stops); a second signal gets the previous handler (Ctrl-C twice still quits at once)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self.previous: dict = {}

    def _handler(self, signum, frame) -> None:
        self.received = signum
        signal.signal(signum, self.previous.get(signum) or signal.SIG_DFL)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            for s in self.SIGNALS:
                self.previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self.previous.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""


def restore(blob: dict, model, optimizer) -> Progress:
    """Load a checkpoint into a built model and optimizer (and the RNGs); returns the run's counters."""
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    if hasattr(optimizer, "train"):  # schedule-free: back to the training iterate
        optimizer.train()
    set_rng_states(blob["rng"])
    saved = blob["progress"]
    curve, reports = [tuple(c) for c in saved["curve"]], [tuple(r) for r in saved["reports"]]
    return Progress(**{**saved, "curve": curve, "reports": reports})
