"""The chunked op's captured gradients (capture_op_inputs.py) against fp64 autograd of its PyTorch form
on the same inputs and do, by batch row and token block; and the tokens of largest |do|."""

import sys

import torch
from archdsl.codegen.run.chunked_torch import chunked_torch


def rel(a, b):
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    return ((a - b).pow(2).mean() / b.pow(2).mean()).sqrt().item()


def main():
    c = torch.load(sys.argv[1])
    xs = [c[n].double().requires_grad_(True) for n in ("lw", "q", "k", "v")]
    o, _ = chunked_torch(*xs, [], c["h0"].double(), c["chunk"])
    (o * c["do"].double()).sum().backward()
    for i, n in enumerate(["dlw", "dq", "dk", "dv"]):
        g, ex = c["out"][i], xs[i].grad
        parts = " ".join(
            f"b{b}t{t}: {rel(g[b, t : t + 32], ex[b, t : t + 32]):.1e}" for b in range(2) for t in (0, 32, 64)
        )
        print(n, f"all {rel(g, ex):.2e}", parts)
    size = c["do"].float().pow(2).sum(-1).sqrt()  # [B, T, H]
    _, T, H = size.shape
    top = size.flatten().topk(5)
    where = [
        (int(i // (T * H)), int(i // H % T), int(i % H), round(float(v), 2))
        for v, i in zip(top.values, top.indices)
    ]
    print("largest |do| (b,t,h):", where, "median", float(size.median()))


if __name__ == "__main__":
    main()
