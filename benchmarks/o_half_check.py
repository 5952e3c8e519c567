"""The chunked op's 16-bit ``o`` (``LAUNCH["o_half"]``) or 16-bit stored intermediates
(``--switch store_half``) against the reference: the kernel harness (tests/kernel_harness.py) on the
chunked tests' bf16 layers (tests/test_chunked.py: gdn, mamba2, gla, E88 identity at their ``test``
shapes, B 2, T 33, chunks of 16), with the switch off and on; one row per layer and setting with the
worst tensor's relative RMS error (tolerance 2e-2 in bf16) and y's.

On the CPU the Triton interpreter converts fp32 to bf16 by truncation (a GPU rounds to nearest even),
which biases every 16-bit store; ``--round-nearest`` makes the interpreter round as a GPU does.

    TRITON_INTERPRET=1 python benchmarks/o_half_check.py --round-nearest --out o-half.md
    TRITON_INTERPRET=1 python benchmarks/o_half_check.py --switch store_half --round-nearest
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from archdsl.codegen.run import chunked_common  # noqa: E402
from kernel_harness import compare_backends  # noqa: E402
from test_chunked import LINEAR, layer_of  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def round_to_nearest() -> None:
    """The interpreter's fp32 -> bf16 conversion rounded to nearest even, as on a GPU."""
    import triton.language as tl
    from triton.runtime import interpreter

    plain = interpreter.InterpreterBuilder.cast_impl

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            bits = np.ascontiguousarray(src.data, dtype=np.float32).view(np.uint32).astype(np.uint64)
            return interpreter.TensorHandle(
                ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16), dst_type.scalar
            )
        return plain(self, src, dst_type)

    interpreter.InterpreterBuilder.cast_impl = cast_impl


def check(name: str, switch: str, half: bool, dtype: torch.dtype) -> list[str]:
    chunked_common.LAUNCH[switch] = half
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            errors = compare_backends(layer_of(name), B=2, T=33, dtype=dtype, chunk=16, strategy="chunked")
        except AssertionError as e:
            return [name, "on" if half else "off", f"failed: {e}", "", ""]
    worst = max(errors, key=errors.get)
    return [name, "on" if half else "off", f"{errors[worst]:.2e}", worst, f"{errors.get('y', 0.0):.2e}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", nargs="*", default=sorted(LINEAR), choices=sorted(LINEAR))
    ap.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    ap.add_argument("--round-nearest", action="store_true", help="the interpreter rounds as a GPU")
    ap.add_argument("--switch", default="o_half", choices=["o_half", "store_half"])
    ap.add_argument("--out", default="")
    opts = ap.parse_args()
    if opts.round_nearest:
        round_to_nearest()
    lines = [
        f"`python benchmarks/o_half_check.py {' '.join(sys.argv[1:])}`",
        "",
        f"| layer | {opts.switch} | worst rel. RMS | tensor | y |",
        "|---|---|---|---|---|",
    ]
    for name in opts.specs:
        for half in (False, True):
            lines.append("| " + " | ".join(check(name, opts.switch, half, DTYPES[opts.dtype])) + " |")
            print(lines[-1], flush=True)
    if opts.out:
        Path(opts.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
