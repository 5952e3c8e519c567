"""``archdsl train MODEL [--preset NAME | --params 100M --heads 12 --n 32 --depth 20 --set k=v …]
(--minutes M | --steps N | --tokens N) [--data PATH…] [--val PATH] [--device cuda|cpu] [--out DIR]
[--resume | --force]
[--backend reference|triton] [--batch --seq --lr --optimizer --precision --weights --seed]
[--pack [--doc-sep SEP]] [--log-to csv|tensorboard|wandb …] [--compile [--compile-mode MODE]]``."""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path

from archdsl import args as A
from archdsl.config import apply_overrides, field_types, format_value, to_argv, unknown_key
from archdsl.errors import ArchdslError
from archdsl.train.config import CHOICES

EXIT = {"ok": 0, "pruned": 0, "nonfinite": 1, "interrupted": 130}


def add_arguments(p) -> None:
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a spec (path or bundled name) or a baseline "
        "(mamba2, fla-gdn, llama, lstm, gru, nn-lstm, nn-gru)",
    )
    m = p.add_argument_group("model")
    m.add_argument("--preset", help="a named configuration of the spec")
    m.add_argument("--params", type=A.count, help="parameter budget (250K, 100M, 1.3B): the width is solved")
    m.add_argument("--dim", type=A.positive_int, help="width (default: the preset's or the spec's)")
    m.add_argument("--heads", type=A.positive_int, help="shorthand for --set heads=H")
    m.add_argument("--n", type=A.positive_int, help="shorthand for --set n=N (state size per head)")
    m.add_argument("--expansion", type=A.positive_float, help="shorthand for --set expansion=E")
    m.add_argument("--depth", type=A.positive_int, help="layers (default: the preset's depth, else 20)")
    m.add_argument(
        "--align", type=A.positive_int, default=1, help="a solved width is a multiple of this (research: 128)"
    )
    m.add_argument("--set", action="append", default=[], metavar="K=V", help="override a hyper or choice")
    m.add_argument("--backend", default="reference", help="spec cell backend: reference | triton")
    A.add_products(m)
    m.add_argument(
        "--keep-states",
        action="store_true",
        help="the fused loop's forward keeps every step's state, so its backward recomputes nothing: "
        "faster, for B x T states of memory a layer (the loop strategy only)",
    )
    b = p.add_argument_group("budget (exactly one)").add_mutually_exclusive_group(required=True)
    b.add_argument(
        "--minutes", type=A.positive_float, help="timed training minutes (warm-up and evaluation excluded)"
    )
    b.add_argument("--steps", type=A.positive_int, help="training steps")
    b.add_argument("--tokens", type=A.count, help="training tokens, e.g. 50M (rounded up to whole steps)")
    _training_arguments(p.add_argument_group("training"))
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any field of the model or training config by name (clip=0.5, betas=0.9,0.99, "
        "warm_steps=0); docs/training.md lists them",
    )


def _training_arguments(t) -> None:
    t.add_argument(
        "--data",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="byte files read as one stream: text, .bin, .npy, or any of them .xz "
        "(default: the embedded demo corpus)",
    )
    t.add_argument(
        "--val", metavar="PATH", help="held-out file (default: the last 1%% of the training stream)"
    )
    t.add_argument(
        "--device", type=A.device, default="auto", help="cuda | cpu (default: cuda when available)"
    )
    t.add_argument("--out", type=A.writable_dir, help="run directory (default runs/MODEL[-PRESET])")
    again = t.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true", help="continue the checkpoint in --out, same total budget"
    )
    again.add_argument(
        "--force", action="store_true", help="replace the run already in --out (its files are removed)"
    )
    t.add_argument("--batch", type=A.positive_int, default=32, help="windows per step (default 32)")
    t.add_argument("--seq", type=A.positive_int, default=512, help="bytes per window (default 512)")
    t.add_argument("--lr", type=A.positive_float, default=3e-4, help="learning rate (default 3e-4)")
    t.add_argument(
        "--optimizer", default="schedulefree", help="schedulefree (default) | adamw (warmup + cosine)"
    )
    t.add_argument("--warmup", type=A.nonnegative_int, default=0, help="LR warm-up steps (default 0)")
    t.add_argument(
        "--precision", default="auto", help="autocast: bf16 | fp32 (default: bf16 on CUDA, fp32 on CPU)"
    )
    t.add_argument("--weights", default="fp32", help="master weights: fp32 (default) | bf16")
    t.add_argument(
        "--seed", type=A.nonnegative_int, default=0, help="seed of the data order and of the initialisation"
    )
    t.add_argument(
        "--eval-bytes", type=A.count, default="1M", help="held-out bytes scored at the end (default 1M)"
    )
    t.add_argument(
        "--checkpoint-every",
        type=A.nonnegative_float,
        default=600.0,
        help="seconds between checkpoints (600; 0: none)",
    )
    t.add_argument("--log-every", type=A.positive_int, default=10, help="steps per log line (default 10)")
    t.add_argument(
        "--log-to",
        nargs="+",
        action="extend",
        default=[],
        choices=("csv", "tensorboard", "wandb"),
        help="also send the metrics to metrics.csv, TensorBoard (RUN/tensorboard/) or Weights & Biases",
    )
    t.add_argument(
        "--eval-every",
        type=A.positive_int,
        metavar="STEPS",
        help="score the held-out set every STEPS steps, off the clock (default: at the end only)",
    )
    t.add_argument(
        "--pack",
        action="store_true",
        help="reset the recurrent state at each document of a window and never predict across one "
        "(spec models; see --doc-sep)",
    )
    t.add_argument(
        "--doc-sep",
        type=doc_sep,
        metavar="SEP",
        help="with --pack: the bytes that start a document, escapes \\0 \\n \\t \\xHH allowed "
        "(default '\\0', a NUL byte; each data file also starts one; on the demo corpus: each source file)",
    )
    t.add_argument("--compile", action="store_true", help="torch.compile the model (off the clock)")
    t.add_argument(
        "--compile-mode",
        choices=CHOICES["compile_mode"],
        help="with --compile: torch.compile's mode; reduce-overhead replays the step as CUDA graphs "
        "(CUDA only), max-autotune-no-cudagraphs tunes the fused kernels (default: default)",
    )
    t.add_argument("--threads", type=A.positive_int, help="CPU threads for torch (default: torch's choice)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar or status lines")


#: config fields with a flag of their own (``--eval-bytes`` sets ``eval_bytes``); any field, these
#: included, is also ``--config KEY=VALUE`` (archdsl/config.py reads both the same way)
MODEL_FLAGS = ("preset", "params", "dim", "depth", "align", "backend", "products", "keep_states", "seed")
TRAIN_FLAGS = (
    *("minutes", "steps", "tokens", "batch", "seq", "lr", "optimizer", "warmup", "precision", "weights"),
    *("val", "eval_bytes", "device", "out", "seed", "log_every", "eval_every", "checkpoint_every"),
    *("threads", "resume", "force", "compile", "progress", "data", "log_to", "pack", "doc_sep"),
    "compile_mode",
)
SHORTHANDS = ("heads", "n", "expansion")  # --heads H is --set heads=H
SWITCHES = ("resume", "force", "compile", "pack", "keep_states")  # store_true flags
LISTS = ("data", "log_to")  # flags that take several values
#: where and how a run is kept, not what it computes: a reproduce command leaves them out
PLACEMENT = ("out", "progress", "checkpoint", "report_fractions", "resume", "force")


def _flag_items(args, cls, names) -> list[str]:
    """``field=value`` for each flag of ``names`` that the command line gave."""
    types, items = field_types(cls), []
    for name in names:
        value = getattr(args, name, None)
        if name == "progress" and args.no_progress:
            items.append(f"{name}={format_value(False)}")
        elif name == "checkpoint_every" and value == 0:
            items.append(f"{name}={format_value(None)}")  # 0: no timed checkpoints
        elif value is not None and value is not False and value != []:
            items.append(f"{name}={format_value(value, types[name])}")
    return items


def _route(items: list[str], model_cls, train_cls) -> tuple[list[str], list[str]]:
    """``--config`` items to the ModelConfig or the TrainConfig by field name (``seed``: both)."""
    model_fields, train_fields = field_types(model_cls), field_types(train_cls)
    to_model, to_train = [], []
    for item in items:
        name = item.split("=", 1)[0].strip().replace("-", "_").partition(".")[0]
        if "=" in item and name not in model_fields and name not in train_fields:
            raise unknown_key("--config", item, name, [*model_fields, *train_fields])
        if name in model_fields:
            to_model.append(item)
        if name in train_fields or name not in model_fields:
            to_train.append(item)
    return to_model, to_train


def configs(args):
    """The ModelConfig and TrainConfig that the flags describe."""
    from archdsl.lm.config import ModelConfig
    from archdsl.train.config import TrainConfig

    if args.params is not None and args.dim is not None:
        raise ArchdslError("give --params (the width is solved) or --dim, not both")
    for item in args.set:
        if "=" not in item:
            raise ArchdslError(f"--set expects KEY=VALUE, found '{item}'")
    sets = [f"sets.{item.strip()}" for item in args.set]
    sets += [f"sets.{k}={format_value(getattr(args, k))}" for k in SHORTHANDS if getattr(args, k) is not None]
    more_model, more_train = _route(list(args.config), ModelConfig, TrainConfig)
    model_items = [f"model={args.model}", *_flag_items(args, ModelConfig, MODEL_FLAGS), *sets]
    model_cfg = apply_overrides(ModelConfig, [*model_items, *more_model], "--config")
    train_items = [f"out={format_value(args.out or default_out(args), str)}"]
    train_items += _flag_items(args, TrainConfig, TRAIN_FLAGS)
    cfg = apply_overrides(TrainConfig, [*train_items, *more_train], "--config")
    if cfg.doc_sep is not None and not cfg.pack:
        raise ArchdslError("--doc-sep is given without --pack", hint="add --pack, or leave --doc-sep out")
    from archdsl.train.sinks import check as check_sinks

    check_sinks(cfg.log_to)  # a missing TensorBoard or W&B is said before anything runs
    return model_cfg, cfg


def command(model_cfg, cfg, leave_out: tuple[str, ...] = PLACEMENT) -> list[str]:
    """``archdsl train MODEL …``: the command line whose ``configs`` gives back ``model_cfg`` and
    ``cfg``, but for the fields of ``leave_out`` (``--seed`` is ``cfg.seed`` and sets both seeds)."""
    from archdsl.lm.config import ModelConfig
    from archdsl.train.config import TrainConfig

    if model_cfg.dim is not None:  # a solved width says all that the budget decided
        model_cfg = replace(model_cfg, params=None, align=ModelConfig.align, tolerance=ModelConfig.tolerance)
    items = to_argv(model_cfg, ModelConfig(model_cfg.model), always=("depth",))
    items = [i for i in items if not i.startswith("seed=")]
    kept = replace(TrainConfig(), **{k: getattr(cfg, k) for k in leave_out})
    items += to_argv(cfg, kept, always=("seed",))
    argv, tail = ["archdsl", "train", model_cfg.model], []
    for item in items:
        key, text = item.split("=", 1)
        name = key.partition(".")[0]
        flag = "--" + name.replace("_", "-")
        value = getattr(cfg, name) if name in field_types(TrainConfig) else getattr(model_cfg, name)
        if name == "sets":
            argv += ["--set", f"{key[5:]}={text}"]
        elif name in LISTS:
            tail += [flag, *value]
        elif name in SWITCHES:
            argv += [flag] if value else []
        elif name == "progress":
            argv += ["--no-progress"]
        elif name == "checkpoint_every":
            argv += [flag, "0" if value is None else text]
        elif (name in MODEL_FLAGS or name in TRAIN_FLAGS) and value is not None:
            argv += [flag, value if isinstance(value, str) else text]
        else:
            argv += ["--config", item]
    return argv + tail


def doc_sep(text: str) -> str:
    """``--doc-sep``: kept as written (the run's config shows it so), checked that it reads as bytes."""
    import argparse

    from archdsl.train.packing import separator

    try:
        separator(text)
    except ArchdslError as e:
        raise argparse.ArgumentTypeError(e.message.removeprefix("--doc-sep: ")) from None
    return text


def default_out(args) -> str:
    name = Path(args.model).stem if args.model.endswith(".rnn") else args.model
    name += f"-{args.preset}" if args.preset else ""
    return str(Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "_", name))


def summary(result, out: Path) -> str:
    info = result.info
    size = ", ".join(
        f"{k} {info[k]}" for k in ("dim", "depth", "heads", "n_state") if info.get(k) is not None
    )
    parts = [
        f"{info.get('model')}: {result.status}",
        f"{result.params:,} params ({size})",
        f"{result.steps:,} steps",
        f"{result.tokens:,} tokens",
        f"{result.tokens_per_s:,.0f} tok/s",
    ]
    if result.last100_loss is not None:
        parts.append(f"last-100 loss {result.last100_loss:.4f}")
    if result.val_bpb is not None:
        parts.append(f"held-out {result.val_bpb:.4f} bpb")
    parts.append(f"{result.train_s:.1f} s timed")
    return "  ".join(parts)


def run(args) -> int:
    from archdsl.train.trainer import train

    model_cfg, cfg = configs(args)
    device = cfg.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_batch_memory(cfg.batch, cfg.seq, device)
    if not cfg.data:
        print(
            "no --data given: training on the embedded demo corpus (the Python standard library's own "
            "sources; see docs/training.md)",
            file=sys.stderr,
        )
    result = train(model_cfg, cfg)
    print(summary(result, Path(cfg.out)))
    if result.message:
        print(result.message)
    print(f"result: {Path(cfg.out) / 'result.json'}")
    return EXIT[result.status]


#: bytes per token that a step needs at the least: the logits over 256 bytes in fp32, their float copy
#: and their gradient (the model's own activations come on top)
FLOOR_BYTES_PER_TOKEN = 3 * 256 * 4


def free_memory(device: str) -> int | None:
    """Bytes free on ``device`` (cuda: the driver's count; cpu: MemAvailable), None when unknown."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_batch_memory(batch: int, seq: int, device: str) -> None:
    """Refuse, before anything is built, a batch x seq whose logits alone do not fit in free memory."""
    need = batch * seq * FLOOR_BYTES_PER_TOKEN
    free = free_memory(device)
    if free is not None and need > free:
        raise ArchdslError(
            f"--batch {batch} x --seq {seq} = {batch * seq:,} tokens per step need at least "
            f"{need / 2**30:,.1f} GiB (the logits alone), but {device} has {free / 2**30:,.1f} GiB free",
            hint="lower --batch or --seq",
        )
