"""The kernel harness (tests/kernel_harness.py) on the GPU: every spec in specs/ at its default size,
fp32 and bf16, plus the three benchmark shapes at B 32, T 512 in bf16. Prints Markdown:

    python benchmarks/harness_gpu.py --out benchmarks/results/harness-h100.md
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch
import triton

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from kernel_harness import TOLERANCE, compare_backends  # noqa: E402

from archdsl.checker import instantiate  # noqa: E402
from archdsl.parser import parse_file  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--T", type=int, default=256)
    args = ap.parse_args()
    lines = [
        "# The kernel harness on the GPU",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- device: {torch.cuda.get_device_name()}",
        f"- torch {torch.__version__}, triton {triton.__version__}, python {platform.python_version()}",
        f"- command: `python {' '.join(sys.argv)}`",
        "- each row: the compiled layer against the reference layer with the same weights (output, final "
        "states, every gradient: input, initial state, parameters), relative RMS error; see "
        "tests/kernel_harness.py",
        "",
        "| spec | B | T | dtype | result | time |",
        "|---|---|---|---|---|---|",
    ]
    for path in sorted((ROOT / "specs").glob("*.rnn")):
        layer = instantiate(parse_file(path)).layer
        for dtype in (torch.float32, torch.bfloat16):
            lines.append(row(f"{path.stem} (defaults)", layer, args.B, args.T, dtype))
            print(lines[-1], flush=True)
    for name, (spec, ov) in BENCHMARK_SHAPES.items():
        layer = instantiate(parse_file(ROOT / "specs" / f"{spec}.rnn"), overrides=ov).layer
        lines.append(row(name, layer, 32, 512, torch.bfloat16))
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
