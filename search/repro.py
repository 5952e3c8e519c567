"""A trial as the trainer's configs (job dicts) and as the ``archdsl train`` command that reproduces it."""

from __future__ import annotations

import shlex
from pathlib import Path

from .space import Candidate
from .study import Settings


def model_job(cand: Candidate, s: Settings, seed: int) -> dict:
    """ModelConfig fields: the width is left to the budget solver unless the space searched it."""
    return {
        "model": cand.model,
        "sets": dict(cand.sets),
        "depth": cand.depth,
        "dim": cand.dim,
        "params": s.budget,
        "align": s.align,
        "backend": s.backend,
        "seed": seed,
    }


def train_job(cand: Candidate, s: Settings, out: Path, seed: int) -> dict:
    """TrainConfig fields; unset ones are left out so that the trainer's defaults apply."""
    job = {
        "minutes": s.minutes,
        "lr": cand.lr,
        "data": list(s.data),
        "val": s.val,
        "batch": s.batch,
        "seq": s.seq,
        "eval_bytes": s.eval_bytes,
        "device": s.device,
        "out": str(out),
        "seed": seed,
        "progress": False,
        "checkpoint": False,
    }
    return {k: v for k, v in job.items() if v is not None and v != []}


def _num(x) -> str:
    return repr(x) if isinstance(x, float) else str(x)


def train_command(model: dict, train: dict) -> str:
    """The exact ``archdsl train`` command for a solved model config and a train job."""
    argv = ["archdsl", "train", model["model"]]
    if model.get("preset"):
        argv += ["--preset", model["preset"]]
    for k, v in sorted((model.get("sets") or {}).items()):
        argv += ["--set", f"{k}={_num(v)}"]
    argv += ["--dim", str(model["dim"]), "--depth", str(model["depth"])]
    if model.get("backend", "reference") != "reference":
        argv += ["--backend", model["backend"]]
    argv += ["--minutes", _num(train["minutes"]), "--lr", _num(train["lr"])]
    for key in ("batch", "seq", "eval_bytes"):
        if train.get(key) is not None:
            argv += [f"--{key.replace('_', '-')}", str(train[key])]
    if train.get("data"):
        argv += ["--data", *train["data"]]
    if train.get("val"):
        argv += ["--val", train["val"]]
    if train.get("device"):
        argv += ["--device", train["device"]]
    argv += ["--seed", str(train.get("seed", 0))]
    return shlex.join(argv)
