"""The chunked layer against the reference on the GPU (fp32 and bf16): gdn, mamba2, e88 identity at
their test presets and GLA, T 130, chunk 16, 32 and 64 (bf16: 16 and 64) — the compiled kernels,
not the interpreter.

    python benchmarks/chunked_check.py [SPEC ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kernel_harness import compare_backends  # noqa: E402

from archdsl.lang.checker import instantiate  # noqa: E402
from archdsl.lang.parser import parse_file  # noqa: E402

CASES = [
    ("specs/gdn.rnn", {"heads": 3}),
    ("specs/mamba2.rnn", {}),
    ("specs/e88.rnn", {"nonlin": "identity"}),
    ("tests/specs/gla.rnn", {}),
]


def main():
    only = sys.argv[1:]  # spec names (gdn, mamba2, e88, gla); none: all
    for path, sets in CASES:
        name = Path(path).stem
        if only and name not in only:
            continue
        layer = instantiate(parse_file(path), "test", sets).layer
        for dtype, chunk in (
            (torch.float32, 16),
            (torch.float32, 32),
            (torch.float32, 64),
            (torch.bfloat16, 16),
            (torch.bfloat16, 64),
        ):
            try:
                errs = compare_backends(
                    layer, B=2, T=130, dtype=dtype, chunk=chunk, device="cuda", strategy="chunked"
                )
            except AssertionError as e:  # one line per case: a failure does not hide the others
                print(f"{name} {dtype} C {chunk}: FAILED {str(e).splitlines()[0]}", flush=True)
                continue
            print(f"{name} {dtype} C {chunk}: worst rel-rms {max(errs.values()):.1e}", flush=True)


if __name__ == "__main__":
    main()
