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
    ``--products`` where the trial's layer runs the chunked strategy (``takes_products``)."""
    cfg = ModelConfig(
        cand.model,
        sets=dict(cand.sets),
        depth=cand.depth,
        dim=cand.dim,
        params=s.budget,
        align=s.align,
        backend=s.backend,
        products=s.products,
        seed=seed,
    )
    return cfg if takes_products(cfg) else dataclasses.replace(cfg, products=None)


def refuse_products(s: Settings, space: Space) -> None:
    """``--products`` refused before any trial where no trial could take it: without the compiled
    kernels, or with baselines only. A trial whose layer does not run the chunked strategy (a
    baseline; a key axis where the loop is chosen) trains without it (``model_config``)."""
    if s.products is None:
        return
    if s.backend != "triton":
        raise ArchdslError(f"--products {s.products}: the compiled kernels' setting; add --backend triton")
    if not any(ms.is_spec for ms in space.models):
        raise ArchdslError(f"--products {s.products}: a spec's setting; this search has only baselines")


def takes_products(cfg: ModelConfig) -> bool:
    """Whether ``cfg``'s kernels read its ``products``: a spec whose layer, at the trial's sizes,
    runs the chunked strategy (``archdsl train`` refuses the flag elsewhere; a search's trial then
    trains without it, and its command says so)."""
    if cfg.products is None:
        return True
    from archdsl.lm.zoo import check_products  # torch and the compiler: only where a setting is given

    try:
        check_products(cfg)
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
