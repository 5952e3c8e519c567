"""A trial as the trainer's configs, as the ``key=value`` items of its job, and as the ``archdsl train``
command that reproduces it: one encoding (archdsl/config.py) for all three."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from archdsl.config import to_argv
from archdsl.errors import ArchdslError
from archdsl.lm.config import ModelConfig
from archdsl.train.cli import command
from archdsl.train.config import TrainConfig

from .space import Candidate, Space
from .study import Settings


def model_config(cand: Candidate, s: Settings, seed: int) -> ModelConfig:
    """The width is left to the budget solver unless the space searched it; the study's
    ``--products`` where the trial's layer runs the chunked strategy, its ``--keep-states`` where it
    runs the fused loop (``takes``)."""
    cfg = ModelConfig(
        cand.model,
        sets=dict(cand.sets),
        depth=cand.depth,
        dim=cand.dim,
        params=s.budget,
        align=s.align,
        backend=s.backend,
        products=s.products,
        keep_states=bool(s.keep_states),
        seed=seed,
    )
    if not takes(cfg, "products"):
        cfg = dataclasses.replace(cfg, products=None)
    return cfg if takes(cfg, "keep_states") else dataclasses.replace(cfg, keep_states=False)


def refuse_kernel_settings(s: Settings, space: Space) -> None:
    """``--products`` and ``--keep-states`` refused before any trial where no trial could take them:
    without the compiled kernels, or with baselines only. A trial whose layer does not run their
    strategy (a baseline; a key axis where another strategy is chosen) trains without them
    (``model_config``)."""
    given = [f"--products {s.products}"] if s.products is not None else []
    given += ["--keep-states"] if s.keep_states else []
    for flag in given:
        if s.backend != "triton":
            raise ArchdslError(f"{flag}: the compiled kernels' setting; add --backend triton")
        if not any(ms.is_spec for ms in space.models):
            raise ArchdslError(f"{flag}: a spec's setting; this search has only baselines")


def takes(cfg: ModelConfig, setting: str) -> bool:
    """Whether ``cfg``'s kernels read its ``products`` (a spec whose layer, at the trial's sizes,
    runs the chunked strategy) or its ``keep_states`` (one on the fused loop); ``archdsl train``
    refuses the flag elsewhere, and a search's trial then trains without it, its command saying so."""
    if not getattr(cfg, setting):
        return True
    from archdsl.lm import zoo  # torch and the compiler: only where a setting is given

    try:
        zoo.check_products(cfg) if setting == "products" else zoo.check_keep_states(cfg)
    except ArchdslError:
        return False
    return True


def train_config(cand: Candidate, s: Settings, out: Path, seed: int, **more) -> TrainConfig:
    """The study's training settings; those it leaves unset keep the trainer's defaults."""
    given = {"batch": s.batch, "seq": s.seq, "eval_bytes": s.eval_bytes, "device": s.device, "val": s.val}
    return TrainConfig(
        minutes=s.minutes,
        lr=cand.lr,
        data=list(s.data),
        out=str(out),
        seed=seed,
        progress=False,
        checkpoint=False,
        **{k: v for k, v in given.items() if v is not None},
        **more,
    )


def job(model_cfg: ModelConfig, cfg: TrainConfig, s: Settings, report: bool) -> dict:
    """What a trial process is given (one JSON line): both configs as ``key=value`` items."""
    return {
        "model": to_argv(model_cfg),
        "train": to_argv(cfg),
        "budget": s.budget,
        "tolerance": s.tolerance,
        "report": report,
    }


def train_command(model: ModelConfig | dict, cfg: TrainConfig) -> str:
    """The exact ``archdsl train`` command of a solved model config (or its recorded dict) and a
    trial's training config; where the trial kept its files is left out."""
    return shlex.join(command(model if isinstance(model, ModelConfig) else ModelConfig(**model), cfg))
