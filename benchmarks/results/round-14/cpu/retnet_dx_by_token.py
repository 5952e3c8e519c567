"""Where RetNet_100m's bf16 compiled layer departs from its bf16 reference: dx by token block and by
batch row (B 2 × T 100; oracle.py's weights and seeds).

    TRITON_INTERPRET=1 python retnet_dx_by_token.py "" 2x100 [float32|bfloat16] [flip]
"""

import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")
import torch  # noqa: E402
from retnet_bf16_vs_reference_cpu import ROOT, copy_of, rel  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from kernel_harness import generic_weights  # noqa: E402

from archdsl.lang.checker import instantiate  # noqa: E402
from archdsl.lang.parser import parse_file  # noqa: E402
from archdsl.layer import RecurrentLayer  # noqa: E402


def main():
    sets = {k: int(v) for k, v in (a.split("=") for a in sys.argv[1].split(","))} if sys.argv[1] else {}
    B, T = map(int, sys.argv[2].split("x"))
    dtype = getattr(torch, sys.argv[3]) if len(sys.argv) > 3 else torch.bfloat16
    ir = instantiate(parse_file(ROOT / "specs" / "retnet.rnn"), "RetNet_100m", sets).layer
    torch.manual_seed(0)
    ours = generic_weights(RecurrentLayer(ir, backend="triton", seed=0))
    x = torch.randn(B, T, ir.dim, generator=torch.Generator().manual_seed(1))
    w = torch.randn(B, T, ir.dim, generator=torch.Generator().manual_seed(2))
    if len(sys.argv) > 4:  # the batch rows swapped: does the error follow the data?
        x, w = x.flip(0), w.flip(0)

    def dx(backend):
        xx = x.to(dtype).clone().requires_grad_(True)
        (copy_of(ir, ours, backend, dtype)(xx)[0].float() * w).sum().backward()
        return xx.grad.float()

    a, b = dx("triton"), dx("reference")
    for lo, hi in ((0, 32), (32, 64), (64, 96), (96, T)):
        size = b[:, lo:hi].pow(2).mean().sqrt()
        print(f"t {lo}-{hi}: dx rel {rel(a[:, lo:hi], b[:, lo:hi]):.2e}  |ref| {size:.3e}")
    for row in range(B):
        print(f"b{row}: {rel(a[row], b[row]):.2e}")


if __name__ == "__main__":
    main()
