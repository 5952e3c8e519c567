"""``archdsl train MODEL [--preset NAME | --params 100M --heads 12 --n 32 --depth 20 --set k=v …]
(--minutes M | --steps N | --tokens N) [--data PATH…] [--val PATH] [--device cuda|cpu] [--out DIR]
[--resume | --force]
[--backend reference|triton] [--batch --seq --lr --optimizer --precision --weights --seed]
[--pack [--doc-sep SEP]] [--log-to csv|tensorboard|wandb …]``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from archdsl import args as A
from archdsl.errors import ArchdslError
from archdsl.lang.check_cmd import parse_sets

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
    b = p.add_argument_group("budget (exactly one)").add_mutually_exclusive_group(required=True)
    b.add_argument(
        "--minutes", type=A.positive_float, help="timed training minutes (warm-up and evaluation excluded)"
    )
    b.add_argument("--steps", type=A.positive_int, help="training steps")
    b.add_argument("--tokens", type=A.count, help="training tokens, e.g. 50M (rounded up to whole steps)")
    t = p.add_argument_group("training")
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
    t.add_argument("--threads", type=A.positive_int, help="CPU threads for torch (default: torch's choice)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar or status lines")


def configs(args):
    """The ModelConfig and TrainConfig that the flags describe."""
    from archdsl.lm.budget import parse_count
    from archdsl.lm.model import ModelConfig
    from archdsl.train.trainer import TrainConfig

    sets: dict[str, object] = dict(parse_sets(args.set))
    for name in ("heads", "n", "expansion"):
        if getattr(args, name) is not None:
            sets[name] = getattr(args, name)
    if args.params is not None and args.dim is not None:
        raise ArchdslError("give --params (the width is solved) or --dim, not both")
    model_cfg = ModelConfig(
        model=args.model,
        preset=args.preset,
        sets=sets,
        dim=args.dim,
        depth=args.depth,
        params=parse_count(args.params) if args.params is not None else None,
        align=args.align,
        backend=args.backend,
        seed=args.seed,
    )
    cfg = TrainConfig(
        minutes=args.minutes,
        steps=args.steps,
        tokens=parse_count(args.tokens) if args.tokens else None,
        batch=args.batch,
        seq=args.seq,
        lr=args.lr,
        optimizer=args.optimizer,
        warmup=args.warmup,
        precision=args.precision,
        weights=args.weights,
        data=list(args.data),
        val=args.val,
        eval_bytes=parse_count(args.eval_bytes),
        device=args.device,
        out=args.out or default_out(args),
        seed=args.seed,
        log_every=args.log_every,
        log_to=list(args.log_to),
        eval_every=args.eval_every,
        pack=args.pack,
        doc_sep=args.doc_sep,
        checkpoint_every=args.checkpoint_every or None,
        resume=args.resume,
        force=args.force,
        progress=not args.no_progress,
        compile=args.compile,
        threads=args.threads,
    )
    if args.doc_sep is not None and not args.pack:
        raise ArchdslError("--doc-sep is given without --pack", hint="add --pack, or leave --doc-sep out")
    from archdsl.train.sinks import check as check_sinks

    check_sinks(cfg.log_to)  # a missing TensorBoard or W&B is said before anything runs
    return model_cfg, cfg


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
