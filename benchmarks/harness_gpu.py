"""The kernel harness (tests/kernel_harness.py) on the GPU: every spec in specs/ at its default size,
fp32 and bf16, plus the three benchmark shapes at B 32, T 512 in bf16. Prints Markdown:

    python benchmarks/harness_gpu.py --out benchmarks/results/harness-h100.md
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import triton

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from kernel_harness import TOLERANCE, compare_backends  # noqa: E402

from archdsl.lang.checker import instantiate  # noqa: E402
from archdsl.lang.parser import parse_file  # noqa: E402

BENCHMARK_SHAPES = {
    "E88_d12h32": ("e88", {"dim": 3200, "heads": 12, "n": 32}),
    "E88_h32n16": ("e88", {"dim": 2432, "heads": 32, "n": 16}),
    "E75h4n32": ("e75", {"dim": 1920, "heads": 4, "n": 32}),
}


def row(label, layer, B, T, dtype) -> str:
    t0 = time.time()
    try:
        errors = compare_backends(layer, B=B, T=T, dtype=dtype, chunk=16, device="cuda")
    except AssertionError as e:
        return f"| {label} | {B} | {T} | {str(dtype)[6:]} | FAILED: {str(e).splitlines()[0]} | |"
    worst = max(errors, key=errors.get)
    return (
        f"| {label} | {B} | {T} | {str(dtype)[6:]} | pass: {len(errors)} tensors, worst {worst} "
        f"{errors[worst]:.1e} (tol {TOLERANCE[dtype]:.0e}) | {time.time() - t0:.0f} s |"
    )


def one_row(args) -> None:
    """Child mode: one row, printed (a child per row, so that a row over its time limit is reported)."""
    if args.shape:
        spec, ov = BENCHMARK_SHAPES[args.shape]
        layer = instantiate(parse_file(ROOT / "specs" / f"{spec}.rnn"), overrides=ov).layer
        print(row(args.shape, layer, 32, 512, torch.bfloat16), flush=True)
    else:
        layer = instantiate(parse_file(ROOT / "specs" / f"{args.spec}.rnn")).layer
        for dtype in (torch.float32, torch.bfloat16):
            print(row(f"{args.spec} (defaults)", layer, args.B, args.T, dtype), flush=True)


def child(extra: list[str], label: str, timeout: int) -> list[str]:
    cmd = [sys.executable, __file__, *extra]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        done = [line for line in (e.stdout or b"").decode().splitlines() if line.startswith("| ")]
        return done + [f"| {label} | | | | not finished within {timeout} s | |"]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    return rows or [f"| {label} | | | | error: {out.stderr.strip().splitlines()[-1:]} | |"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--timeout", type=int, default=90, help="seconds per row (compile included)")
    ap.add_argument("--only", help="comma-separated spec names (default: every spec, and the shapes)")
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.shape or args.spec:
        return one_row(args)
    lines = [
        "# The kernel harness on the GPU",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- device: {torch.cuda.get_device_name()}",
        f"- torch {torch.__version__}, triton {triton.__version__}, python {platform.python_version()}",
        f"- command: `python {' '.join(sys.argv)}`",
        "- each row: the compiled layer against the reference layer with the same weights (output, final "
        "states, every gradient: input, initial state, parameters), relative RMS error; see "
        "tests/kernel_harness.py. The kernels run their default plan (no autotuning), one warp per program.",
        "",
        "| spec | B | T | dtype | result | time |",
        "|---|---|---|---|---|---|",
    ]
    only = set(args.only.split(",")) if args.only else None
    jobs = [(["--shape", name], name) for name in BENCHMARK_SHAPES if only is None]
    for path in sorted((ROOT / "specs").glob("*.rnn")):
        if only is not None and path.stem not in only:
            continue
        jobs.append(
            (["--spec", path.stem, "--B", str(args.B), "--T", str(args.T)], f"{path.stem} (defaults)")
        )
    for extra, label in jobs:
        rows = child(extra, label, args.timeout)
        lines += rows
        print("\n".join(rows), flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
