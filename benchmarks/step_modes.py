"""Tokens per second of one model's training step run eagerly, under ``torch.compile`` and replayed
as CUDA graphs (issue #10, "The training step"), in one call on one GPU:

    python benchmarks/step_modes.py --md benchmarks/results/step-modes.md [--model E88_d12h32]
        [--params 100M] [--minutes 1] [--modes eager,compile,cudagraphs] [--data PATH …]

The modes are ``archdsl bench --modes``' (``bench.MODES``). Each mode is a fresh ``archdsl train``
process (``archdsl bench``'s runner, so the same warm-up and clock), the same model, data, seed, batch
and budget; only ``--compile``/``--compile-mode`` differ. The Markdown table (``--md``) gives each
mode's tokens/s, its speed against the first mode, its last-100 loss and held-out bits per byte (the
modes must agree on these up to bf16 noise) and its peak memory; the run directories are kept under
``--runs``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import sys
from pathlib import Path


def parse(argv=None):
    from archdsl.train import bench

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--md", required=True, type=Path, help="the Markdown table to write")
    p.add_argument("--runs", type=Path, default=Path("runs/step-modes"), help="run directories")
    p.add_argument("--model", default="E88_d12h32", help="a model as archdsl bench takes it")
    p.add_argument("--params", default="100M", help="parameter budget (the width is solved)")
    p.add_argument("--align", default="128", help="solved widths are multiples of this")
    p.add_argument("--depth", help="layers (default: the preset's depth, else 20)")
    p.add_argument("--minutes", default="1", help="timed minutes per mode")
    p.add_argument("--batch", default="32")
    p.add_argument("--seq", default="512")
    p.add_argument("--backend", default="triton")
    p.add_argument("--device", default="cuda")
    p.add_argument("--data", nargs="+", default=[], help="training files (default: the embedded corpus)")
    p.add_argument("--val", help="held-out file")
    p.add_argument(
        "--modes", type=bench.modes, default="eager,compile,cudagraphs", help=f"of {', '.join(bench.MODES)}"
    )
    p.add_argument("--train-args", default="", help="more 'archdsl train' options for every mode")
    return p.parse_args(argv)


def bench_args(args, mode: str):
    """``archdsl bench``'s arguments for one mode."""
    from archdsl.train import bench

    argv = [args.model, "--params", args.params, "--align", args.align, "--minutes", args.minutes]
    argv += ["--batch", args.batch, "--seq", args.seq, "--backend", args.backend, "--device", args.device]
    argv += [*(["--data", *args.data] if args.data else []), *(["--val", args.val] if args.val else [])]
    argv += ["--depth", args.depth] if args.depth else []
    compile_, compile_mode = bench.MODES[mode]
    argv += ["--compile", "--compile-mode", compile_mode] if compile_ else []
    argv += ["--out", str(args.runs), f"--train-args={args.train_args}"]
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(argv)


def table(rows: list[tuple[str, dict]]) -> list[str]:
    head = [
        "Mode",
        "Settings",
        "tokens/s",
        "vs first",
        "Last100 loss",
        "held-out bpb",
        "peak memory",
        "Status",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = next((r.get("tokens_per_s") for _, r in rows if r.get("tokens_per_s")), None)

    def num(v, f):
        return "-" if v is None else f.format(v)

    for mode, r in rows:
        tps = r.get("tokens_per_s")
        status = r.get("status", "failed") + (f": {r['message']}" if r.get("message") else "")
        lines.append(
            "| "
            + " | ".join(
                [
                    mode,
                    r.get("settings") or "-",
                    num(tps, "{:,.0f}"),
                    num(tps / base if tps and base else None, "{:.2f}x"),
                    num(r.get("last100_loss"), "{:.4f}"),
                    num(r.get("val_bpb"), "{:.4f}"),
                    num(r["peak_mem_bytes"] / 2**30 if r.get("peak_mem_bytes") else None, "{:.1f} GiB"),
                    status.replace("|", "/").replace("\n", " "),
                ]
            )
            + " |"
        )
    return lines


def main(argv=None) -> int:
    from archdsl.train import bench, trainlog
    from archdsl.train.config import step_settings

    args = parse(argv)
    rows = []
    for mode in args.modes:
        b = bench_args(args, mode)
        (entry,) = bench.entries(b)
        if entry.cfg is None:
            raise SystemExit(f"error: {entry.error}")
        print(f"== {mode}: {shlex.join(bench.train_command(entry.cfg, b, args.runs / mode))}", flush=True)
        result = bench.run_one(entry, b, args.runs / mode)
        cfg = result.get("config") or {}
        ran = (
            step_settings(cfg["compile"], cfg["compile_mode"], cfg["compile_backend"])
            if cfg
            else bench.planned_settings(entry, b)
        )
        rows.append((mode, {**result, "settings": ran}))
        print(
            f"== {mode}: {result.get('status')} {result.get('tokens_per_s') or 0:,.0f} tokens/s", flush=True
        )
    env = next((r["environment"] for _, r in rows if r.get("environment")), {})
    title = f"# Training step modes: {args.model} at {args.params}, batch {args.batch} x {args.seq}"
    facts = [
        f"{args.minutes} timed minute(s) per mode, backend {args.backend}, {env.get('gpu') or args.device}; "
        f"torch {env.get('versions', {}).get('torch', '?')}, {platform.python_version()}; "
        f"{datetime.date.today()}",
        "",
        f"`python benchmarks/step_modes.py {shlex.join(sys.argv[1:] if argv is None else argv)}`",
    ]
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text("\n".join([title, "", *table(rows), "", *facts]) + "\n")
    args.md.with_suffix(".json").write_text(trainlog.dumps([{"mode": m, **r} for m, r in rows], indent=1))
    print(f"written: {args.md}")
    return 0 if all(r.get("status") == "ok" for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
