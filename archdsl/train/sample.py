"""``archdsl sample RUN [--prompt TEXT] [--bytes N] [--temperature T] [--top-k K] [--seed S] [--eager]``:
text from a trained run.

The model is rebuilt from the run's checkpoint (``RUN/checkpoint.safetensors``: its model config and
weights, read without running any code). A schedule-free run saves its training weights; sampling
uses the averaged weights its evaluation scored, which the saved optimizer state gives back, in the
precision that evaluation ran in (``decode_precision``: bf16 autocast on a GPU unless the run trained
in fp32). On a GPU each byte's step is replayed as a CUDA graph (``--eager``: not).
"""

from __future__ import annotations

import sys
from pathlib import Path

from archdsl import args as A
from archdsl.errors import ArchdslError


def add_arguments(p) -> None:
    p.add_argument("run", help="a run folder written by `archdsl train` (holds checkpoint.safetensors)")
    p.add_argument("--prompt", default="The ", help="text to continue (default: %(default)r)")
    p.add_argument("--bytes", type=A.positive_int, default=200, help="bytes to sample (default: 200)")
    p.add_argument(
        "--temperature",
        type=A.nonnegative_float,
        default=0.8,
        help="softmax temperature; 0 takes the most likely byte (default: 0.8)",
    )
    p.add_argument("--top-k", type=A.positive_int, help="sample among the K most likely bytes only")
    p.add_argument("--seed", type=A.nonnegative_int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--device", type=A.device, default="auto", help="cuda | cpu | auto (default: auto)")
    p.add_argument(
        "--backend",
        choices=("reference", "triton"),
        help="cell backend (default: the run's on a GPU, the reference on the CPU)",
    )
    p.add_argument(
        "--eager",
        action="store_true",
        help="on a GPU, run each byte's step eagerly, not replayed as a CUDA graph (the same bytes)",
    )


def load_trained(run: str | Path, device: str = "cpu", backend: str | None = None):
    """The trained LM of a run folder, at the weights its evaluation used, in eval mode."""
    import dataclasses

    import torch

    from archdsl.lm.zoo import ModelConfig, build_model
    from archdsl.train import checkpoint

    path = Path(run) / checkpoint.NAME
    if not path.is_file():
        raise ArchdslError(
            f"{run}: no trained run here (no {checkpoint.NAME})",
            hint="give the --out folder of an `archdsl train` run",
        )
    blob = checkpoint.read(path)
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    cfg = ModelConfig(**{k: v for k, v in blob["model_config"].items() if k in fields})
    if backend is not None:
        cfg = dataclasses.replace(cfg, backend=backend)
    elif device == "cpu":
        cfg = dataclasses.replace(cfg, backend="reference")  # the kernels need a GPU (or the interpreter)
    if cfg.backend != "triton":  # the kernels' own settings: the reference reads neither
        cfg = dataclasses.replace(cfg, products=None, keep_states=False)
    model = build_model(cfg)
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ArchdslError(
            f"{path}: the weights do not fit the model its config builds ({first[:200]})"
        ) from None
    if blob["train_config"].get("optimizer") == "schedulefree":
        _averaged_weights(model, blob)
    model.info["precision"] = blob["train_config"].get("precision", "auto")
    return model.to(torch.device(device)).eval()


def decode_precision(trained: str, device: str) -> str:
    """The precision a run's bytes are sampled in: its training's (``--precision``; "auto": bf16 on
    a GPU), the one its held-out evaluation scored; fp32 on the CPU, whose bf16 autocast is slow."""
    if not device.startswith("cuda"):
        return "fp32"
    return "bf16" if trained in ("auto", "bf16") else "fp32"


def _averaged_weights(model, blob: dict) -> None:
    """Schedule-free keeps the training iterate in the model; its ``eval()`` moves the parameters to
    the averaged point that evaluation scores (it needs the optimizer state saved with them)."""
    import schedulefree

    params = [p for p in model.parameters() if p.requires_grad]
    opt = schedulefree.AdamWScheduleFree(params)
    opt.load_state_dict(blob["optimizer"])
    opt.train()  # the loaded state is the training mode's
    opt.eval()


def run(args) -> int:
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ArchdslError("--device cuda was asked for, but torch sees no CUDA GPU")
    model = load_trained(args.run, device, args.backend)
    graphs = False if args.eager else None  # None: graphs on a GPU
    bf16 = decode_precision(model.info["precision"], device) == "bf16"
    with torch.autocast("cuda", torch.bfloat16, enabled=bf16):  # GraphedStep captures with its cache off
        text = model.generate(args.prompt, args.bytes, args.temperature, args.top_k, args.seed, graphs)
    sys.stdout.write(text + "\n")
    return 0
