"""Checkpoints of a training run, written atomically, read without running any code, and the
signal catcher that triggers one.

A checkpoint holds everything a resumed run needs to continue as if it had never stopped: model
and optimizer state, the run's counters (step = the data sampler's position, since a batch is a
function of (seed, step); tokens; timed seconds spent of the budget), the last losses, the curve and
the losses of its next point, the RNG states, both configs (a resume must use the same ones) and the
run's identity: content hashes of the spec text and of every data file.

The file is a safetensors file: the tensors by name, and everything else as strict JSON in its
header's metadata (a tensor appears there as ``{"__tensor__": name}``). Reading it parses JSON and
copies tensor bytes; nothing in it is ever executed (no pickle), so a planted file cannot run code.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from archdsl.errors import ArchdslError

FORMAT = 2
NAME = "checkpoint.safetensors"
OLD_NAME = "checkpoint.pt"  # format 1: a pickle, never loaded (loading a pickle can run code)
META_KEY = "archdsl"
# TrainConfig fields a resumed run may change: they do not change what is computed. The model's
# name and the data paths are compared by content instead (the run's identity).
FREE_ON_RESUME = {
    "resume",
    "force",
    "progress",
    "log_every",
    "checkpoint_every",
    "checkpoint",
    "device",
    "out",
    "threads",
    "data",
    "val",
    # how the step executes, not what it computes (checkpoints from before compile_mode lack it)
    "compile",
    "compile_mode",
    "compile_backend",
}
FREE_MODEL = {"model"}  # a spec is compared by its text's hash, a baseline by its name (identity)


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
    pending: list[float] = field(default_factory=list)  # losses since the last curve point


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


# ---- tensors + strict JSON -------------------------------------------------------------------------
def _encode(x, tensors: dict[str, torch.Tensor]):
    """``x`` as JSON values; tensors move to ``tensors`` (by a fresh name), tuples, non-string keys,
    numpy arrays and non-finite floats get tagged objects, so that ``_decode`` rebuilds ``x`` exactly."""
    if isinstance(x, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = x.detach().to("cpu", copy=True).contiguous()  # a copy: tied weights share memory
        return {"__tensor__": name}
    if isinstance(x, np.ndarray):
        return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return {"__float__": repr(x)}
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in x]}
    if isinstance(x, list):
        return [_encode(v, tensors) for v in x]
    if isinstance(x, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in x):
            return {k: _encode(v, tensors) for k, v in x.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in x.items()]}
    raise TypeError(f"a checkpoint cannot hold a {type(x).__name__}")


def _decode(x, tensors: dict[str, torch.Tensor]):
    if isinstance(x, list):
        return [_decode(v, tensors) for v in x]
    if not isinstance(x, dict):
        return x
    if "__tensor__" in x:
        return tensors[x["__tensor__"]]
    if "__ndarray__" in x:
        return np.array(x["__ndarray__"], dtype=np.dtype(x["dtype"]))
    if "__float__" in x:
        return float(x["__float__"])
    if "__tuple__" in x:
        return tuple(_decode(v, tensors) for v in x["__tuple__"])
    if "__items__" in x:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in x["__items__"]}
    return {k: _decode(v, tensors) for k, v in x.items()}


def _no_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def save(path: Path, model, optimizer, progress, model_cfg, cfg, identity: dict) -> None:
    """Write the checkpoint to a temporary file, then rename it over ``path``."""
    from safetensors.torch import save_file

    blob = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "progress": asdict(progress),
        "rng": rng_states(),
        "model_config": _plain(asdict(model_cfg)),
        "train_config": _plain(asdict(cfg)),
        "identity": identity,
    }
    tensors: dict[str, torch.Tensor] = {}
    meta = json.dumps(_encode(blob, tensors), allow_nan=False, separators=(",", ":"))
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={META_KEY: meta})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read(path: Path) -> dict:
    """The checkpoint's contents; anything that is not a whole checkpoint of this format is an error."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = (f.metadata() or {}).get(META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        if meta is None:
            raise ValueError("no archdsl metadata")
        blob = _decode(json.loads(meta, parse_constant=_no_constant), tensors)
        if not isinstance(blob, dict):
            raise ValueError("metadata is not an object")
    except OSError as e:
        raise ArchdslError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    except Exception as e:  # safetensors, JSON and decoding errors: a damaged or foreign file
        raise ArchdslError(
            f"{path}: not a readable archdsl checkpoint ({type(e).__name__}: {str(e)[:200]})",
            hint="the file is damaged (truncated?) or was not written by archdsl; "
            "start over with --force, or restore the file",
        ) from None
    if blob.get("format") != FORMAT:
        raise ArchdslError(f"{path}: checkpoint format {blob.get('format')} is not {FORMAT}")
    missing = {"model", "optimizer", "progress", "rng", "model_config", "train_config", "identity"} - set(
        blob
    )
    if missing:
        raise ArchdslError(
            f"{path}: not a complete archdsl checkpoint (missing {', '.join(sorted(missing))})"
        )
    return blob


def load(path: Path, model_cfg, cfg) -> dict:
    """Read a checkpoint and check that it belongs to the same run (same model, data and budget)."""
    if not path.is_file():
        old = path.with_name(OLD_NAME)
        hint = (
            f"{old} is a checkpoint of an older archdsl (a pickle, which is never loaded: it could run "
            "code); start over with --force"
            if old.is_file()
            else "start the run without --resume first"
        )
        raise ArchdslError(f"nothing to resume: no checkpoint at {path}", hint=hint)
    blob = read(path)
    diffs = _differences(blob["model_config"], _plain(asdict(model_cfg)), FREE_MODEL)
    diffs += _differences(blob["train_config"], _plain(asdict(cfg)), FREE_ON_RESUME)
    if diffs:
        raise ArchdslError(
            f"cannot resume {path}: the run was started with different settings: " + "; ".join(diffs),
            hint="resume with the same model, data, budget and training options",
        )
    return blob


def check_identity(path: Path, saved: dict, now: dict) -> None:
    """Refuse a resume whose spec text or data differ in content from the checkpoint's."""
    diffs = []
    was, model = str(saved.get("model")), str(now["model"])
    if was != model and was.startswith("sha256:") and model.startswith("sha256:"):
        diffs.append(f"the model's spec text changed (sha256 {_short(was)}, now {_short(model)})")
    elif was != model:
        diffs.append(f"the model changed (was {_short(was)}, now {_short(model)})")
    for key in ("data", "val"):
        if saved.get(key) != now[key]:
            diffs.append(
                f"the {key} files' contents changed (sha256 {_short(saved.get(key))}, now {_short(now[key])})"
            )
    if diffs:
        raise ArchdslError(
            f"cannot resume {path}: " + "; ".join(diffs),
            hint="resume with the spec and data the run started with, or start over with --force",
        )


def _short(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return str(v).split(":")[-1][:12] if v is not None else "none"


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


def restore(blob: dict, model, optimizer, path: Path) -> Progress:
    """Load a checkpoint into a built model and optimizer (and the RNGs); returns the run's counters."""
    try:
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        saved = blob["progress"]
        curve, reports = [tuple(c) for c in saved["curve"]], [tuple(r) for r in saved["reports"]]
        progress = Progress(**{**saved, "curve": curve, "reports": reports})
        set_rng_states(blob["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:  # shapes, names or fields that differ
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArchdslError(
            f"cannot resume {path}: the checkpoint does not fit the model built now ({first[:300]})",
            hint="resume with the model the run started with, or start over with --force",
        ) from None
    if hasattr(optimizer, "train"):  # schedule-free: back to the training iterate
        optimizer.train()
    return progress
