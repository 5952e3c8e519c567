"""``TrainConfig``: what a training run does (budget, batch, optimizer, data, outputs), and ``resolve``,
which checks it and fills in the device and precision.

No torch at import: the search's workers build trial configs and reproduce commands from it without
loading torch (``resolve`` imports it to see the GPU). ``archdsl.config.apply_overrides`` sets its
fields from ``key=value`` items and ``to_argv`` writes them back (docs/training.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from archdsl.errors import ArchdslError

CHOICES = {
    "optimizer": ("schedulefree", "adamw"),
    "precision": ("auto", "bf16", "fp32"),
    "weights": ("fp32", "bf16"),
    # torch.compile's modes: "reduce-overhead" and "max-autotune" replay the step as CUDA graphs
    "compile_mode": ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune"),
    # "aot_eager" traces and differentiates the graph but generates no code (quick; for checking)
    "compile_backend": ("inductor", "aot_eager"),
}
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


@dataclass
class TrainConfig:
    # The budget: give exactly one. Minutes count timed training steps only.
    minutes: float | None = None
    steps: int | None = None
    tokens: int | None = None  # rounded up to whole steps of batch * seq tokens
    batch: int = 32  # B windows per step (variants.md §6)
    seq: int = 512  # T bytes per window; each window reads T + 1 bytes
    lr: float = 3e-4
    optimizer: str = "schedulefree"  # "schedulefree" (AdamWScheduleFree) | "adamw" (warmup + cosine)
    warmup: int = 0  # LR warm-up steps (the protocol uses none)
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float = 1.0  # gradient-norm clipping
    # autocast "bf16" | "fp32"; "auto" = bf16 on CUDA, fp32 on CPU (CPU bf16 autocast is slow)
    precision: str = "auto"
    weights: str = "fp32"  # master weights: "fp32", or "bf16" as the research code kept them
    data: list[str] = field(default_factory=list)  # byte files as one stream; empty = the embedded default
    val: str | None = None  # held-out file; None = hold out the tail of the training stream
    val_fraction: float = 0.01  # size of that tail
    eval_bytes: int = 1_000_000  # held-out bytes scored per evaluation (fixed, so runs compare)
    device: str = "auto"  # "cuda" | "cpu" | "auto" (cuda when available)
    out: str = "runs/train"  # run directory: log.jsonl, checkpoint.safetensors, result.json
    seed: int = 0  # data sampling and torch RNG (the model's init has its own seed)
    log_every: int = 10  # steps per log line and curve point
    checkpoint_every: float | None = 600.0  # wall seconds between checkpoints; None = end and signals only
    checkpoint: bool = True  # write checkpoints at all (a search trial may not need them)
    resume: bool = False  # continue <out>/checkpoint.safetensors with the same total budget
    force: bool = False  # replace a run already in <out> (without it, such a run is refused)
    progress: bool = True  # progress bar on a terminal, plain lines otherwise; False = silent
    report_fractions: tuple[float, ...] = ()  # budget fractions at which to evaluate and call on_report
    warm_steps: int = 2  # steps run (then undone) before the clock starts
    compile: bool = False  # torch.compile the model (during warm-up, off the clock)
    compile_mode: str = "default"  # with compile: a mode of CHOICES (reduce-overhead: CUDA graphs)
    compile_backend: str = "inductor"  # with compile: inductor generates fused code; aot_eager does not
    # CPU threads for torch; None keeps torch's default (on a busy machine, 1 thread can be
    # several times faster than oversubscribed cores)
    threads: int | None = None
    log_to: list[str] = field(default_factory=list)  # more metric sinks: "csv", "tensorboard", "wandb"
    eval_every: int | None = None  # steps between held-out evaluations during the run (None: at the end)
    pack: bool = False  # reset the state at each document of a window (archdsl/train/packing.py)
    doc_sep: str | None = None  # the separator that starts a document, as written (None: NUL, demo: files)


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Check the config and fill ``device`` and ``precision``; bad values raise ArchdslError."""
    given = [k for k in ("minutes", "steps", "tokens") if getattr(cfg, k) is not None]
    if len(given) != 1:
        found = f" (found {', '.join(given)})" if given else ""
        raise ArchdslError(f"give exactly one budget: minutes, steps or tokens{found}")
    if not 0 < getattr(cfg, given[0]) < math.inf:
        raise ArchdslError(
            f"the budget must be finite and positive, found {given[0]} = {getattr(cfg, given[0])}"
        )
    _check_numbers(cfg)
    for name, known in CHOICES.items():
        if getattr(cfg, name) not in known:
            raise ArchdslError(f"unknown {name} '{getattr(cfg, name)}'; choose one of {', '.join(known)}")
    for name in ("batch", "seq", "eval_bytes", "log_every"):
        if getattr(cfg, name) < 1:
            raise ArchdslError(f"{name} must be at least 1, found {getattr(cfg, name)}")
    if any(not 0 < f <= 1 for f in cfg.report_fractions):
        raise ArchdslError(f"report fractions must lie in (0, 1], found {cfg.report_fractions}")
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if device != "cpu" and not device.startswith("cuda"):
        raise ArchdslError(f"unknown device '{device}'; choose cuda or cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        hint = "use --device cpu, or install the CUDA build of torch"
        raise ArchdslError("--device cuda was asked for, but torch sees no CUDA GPU", hint=hint)
    _check_compile(cfg, device)
    precision = {"auto": "bf16" if device.startswith("cuda") else "fp32"}.get(cfg.precision, cfg.precision)
    fractions = tuple(sorted(cfg.report_fractions))
    return replace(cfg, device=device, precision=precision, report_fractions=fractions)


# (field, lowest allowed value, whether the lowest itself is allowed): every number must be finite
_LIMITS = (
    ("lr", 0, False),
    ("warmup", 0, True),
    ("weight_decay", 0, True),
    ("clip", 0, False),
    ("val_fraction", 0, False),
    ("warm_steps", 0, True),
    ("threads", 1, True),
    ("checkpoint_every", 0, False),
)


def _check_numbers(cfg: TrainConfig) -> None:
    """The numeric settings of the Python API, checked as the command line checks its flags."""
    for name, low, inclusive in _LIMITS:
        v = getattr(cfg, name, None)
        if v is None:
            continue
        ok = isinstance(v, (int, float)) and math.isfinite(v) and (v >= low if inclusive else v > low)
        if not ok:
            bound = f">= {low}" if inclusive else f"> {low}"
            raise ArchdslError(f"{name} must be a finite number {bound}, found {v!r}")
    if not cfg.val_fraction < 1:
        raise ArchdslError(f"val_fraction must be below 1, found {cfg.val_fraction!r}")


def _check_compile(cfg: TrainConfig, device: str) -> None:
    """A compile mode needs ``compile``, the inductor backend, and (for CUDA graphs) a CUDA device."""
    if cfg.compile_mode == "default" and cfg.compile_backend == "inductor":
        return
    if not cfg.compile:
        found = "compile_mode" if cfg.compile_mode != "default" else "compile_backend"
        raise ArchdslError(f"{found} {getattr(cfg, found)} is given without compile (add --compile)")
    if cfg.compile_mode != "default" and cfg.compile_backend != "inductor":
        raise ArchdslError(
            f"compile_mode {cfg.compile_mode} is a mode of the inductor backend, "
            f"found compile_backend {cfg.compile_backend}"
        )
    if cfg.compile_mode in CUDA_GRAPH_MODES and not device.startswith("cuda"):
        raise ArchdslError(
            f"compile_mode {cfg.compile_mode} replays CUDA graphs, which need a CUDA device, found "
            f"device {device} (on the CPU: default or max-autotune-no-cudagraphs)"
        )


def step_settings(compile: bool, mode: str = "default", backend: str = "inductor") -> str:
    """How a run executes its step, for tables: ``eager``, ``compile``, ``compile+cudagraphs``,
    ``compile+autotune``, ``compile+autotune+cudagraphs`` or ``compile(aot_eager)``."""
    if not compile:
        return "eager"
    label = "compile" if backend == "inductor" else f"compile({backend})"
    label += "+autotune" if mode.startswith("max-autotune") else ""
    return label + ("+cudagraphs" if mode in CUDA_GRAPH_MODES else "")
