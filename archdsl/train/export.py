"""A finished run's model as files anyone can load: ``model.safetensors`` (the weights that were
evaluated) and ``config.json`` (the model and training configuration, and the run's result), and
``archdsl.load_run(dir)`` to build the model from them.

With the schedule-free optimizer the weights that are trained (``y``) are not the ones that are
evaluated (the averaged ``x``): the held-out bits per byte of a run are those of ``x``, so ``x`` is
what is exported (the checkpoint keeps ``y`` and the optimizer state, to resume training).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from archdsl.errors import ArchdslError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT = 1


def export(model, opt, out: Path, model_cfg, train_cfg, extra: dict) -> None:
    """Write the evaluated weights and the configuration (schedule-free: switched to ``x`` and back)."""
    from safetensors.torch import save_file

    swap = hasattr(opt, "eval") and hasattr(opt, "train")
    if swap:
        opt.eval()
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        tmp = out / (WEIGHTS + ".tmp")
        save_file(tensors, str(tmp), metadata={"format": "archdsl", "version": str(FORMAT)})
        tmp.replace(out / WEIGHTS)
    finally:
        if swap:
            opt.train()
    config = {
        "format": FORMAT,
        "weights": "evaluated (schedule-free: the averaged x)" if swap else "trained",
        "model_config": dataclasses.asdict(model_cfg),
        "train_config": dataclasses.asdict(train_cfg),
        **extra,
    }
    tmp = out / (CONFIG + ".tmp")
    tmp.write_text(json.dumps(config, indent=1, default=str) + "\n")
    tmp.replace(out / CONFIG)


def load_run(path: str | Path, device: str = "cpu"):
    """The language model of a finished run folder, with the weights that were evaluated, in eval
    mode. ``path``: the run's ``--out`` folder (it holds ``model.safetensors`` and ``config.json``)."""
    from safetensors.torch import load_file

    from archdsl.lm.zoo import ModelConfig, build_model

    root = Path(path)
    if not (root / CONFIG).is_file() or not (root / WEIGHTS).is_file():
        raise ArchdslError(
            f"{root} holds no exported model ({CONFIG} and {WEIGHTS})",
            hint="a run writes them when it ends; an interrupted run can be finished with --resume",
        )
    config = json.loads((root / CONFIG).read_text())
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    model = build_model(ModelConfig(**{k: v for k, v in config["model_config"].items() if k in known}))
    missing, unexpected = model.load_state_dict(load_file(str(root / WEIGHTS)), strict=False)
    if missing or unexpected:
        raise ArchdslError(
            f"{root / WEIGHTS} does not fit its config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model.to(device).eval()
