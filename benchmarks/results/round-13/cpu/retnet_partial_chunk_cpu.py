"""Round 13, CPU: retnet's chunked layer in bf16 against its own reference in bf16 at T a multiple of
the chunk (32) and not (20, 40), three seeds each (dim 64, heads 2, chunk 16, B 2). From the
repository root:

    TRITON_INTERPRET=1 python benchmarks/results/round-13/cpu/retnet_partial_chunk_cpu.py 32 20 40
"""

import contextlib
import io
import sys

sys.path.insert(0, "tests")
import torch  # noqa: E402
from kernel_harness import compare_backends  # noqa: E402

from archdsl.api import layer_ir  # noqa: E402

ir = layer_ir("retnet", "test", dim=64, heads=2)
for T in [int(t) for t in sys.argv[1:]]:
    for seed in range(3):
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                e = compare_backends(ir, B=2, T=T, dtype=torch.bfloat16, chunk=16, seed=seed)
            except AssertionError:
                e = None
        if e is None:
            print("T", T, "seed", seed, "FAILED")
            continue
        w = max(e, key=e.get)
        print("T", T, "seed", seed, f"max {e[w]:.2e} {w}", flush=True)
