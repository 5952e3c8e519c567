"""RetNet_100m bf16 (B 2, T = argv[1]): the chunked op's inputs, its incoming do and its gradients,
captured from the backward, saved to cap<T>.pt for op_backward_vs_exact.py."""

import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")
import torch  # noqa: E402
from retnet_bf16_vs_reference_cpu import ROOT, copy_of  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
import archdsl.codegen.run.chunked_backward as cb  # noqa: E402
from kernel_harness import generic_weights  # noqa: E402

from archdsl.lang.checker import instantiate  # noqa: E402
from archdsl.lang.parser import parse_file  # noqa: E402
from archdsl.layer import RecurrentLayer  # noqa: E402

captured = {}
original = cb.chunked_backward


def spy(lw, q, k, v, ab, h0, do, dht, chunk, dot, kept=(), store=torch.float32):
    out = original(lw, q, k, v, ab, h0, do, dht, chunk, dot, kept, store)
    captured.update(lw=lw, q=q, k=k, v=v, h0=h0, do=do, out=[o.clone() for o in out], chunk=chunk, dot=dot)
    return out


def main():
    cb.chunked_backward = spy
    ir = instantiate(parse_file(ROOT / "specs" / "retnet.rnn"), "RetNet_100m", {}).layer
    torch.manual_seed(0)
    ours = generic_weights(RecurrentLayer(ir, backend="triton", seed=0))
    B, T = 2, int(sys.argv[1])
    x = torch.randn(B, T, ir.dim, generator=torch.Generator().manual_seed(1)).bfloat16().requires_grad_(True)
    w = torch.randn(B, T, ir.dim, generator=torch.Generator().manual_seed(2))
    (copy_of(ir, ours, "triton", torch.bfloat16)(x)[0].float() * w).sum().backward()
    torch.save(
        {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in captured.items()}, f"cap{T}.pt"
    )


if __name__ == "__main__":
    main()
