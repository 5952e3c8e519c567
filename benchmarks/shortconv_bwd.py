"""The short convolution's backward kernels (``codegen/run/shortconv.py``) side by side on a GPU, at
the convolutions of GDN_100m (q, k, v: 1024 channels each, no bias) and Mamba2_100m (x: 1792
channels, B and C: 64 each, with a bias), B 32, T 512, window 4, silu, x a bf16 slice of a wider
projection output as the layer hands it over:

    python benchmarks/shortconv_bwd.py [--out FILE]

Each row: one ``shortconv.BACKWARD`` setting (``halo``: the kernel before the walk, the first row
and the baseline; ``walk``: the walking kernel at ``bt`` x ``bc`` blocks, ``warps``, ``seg`` tokens a
program), the summed time (ms, do_bench) of the layer's convolutions' backward, the bandwidth that
time gives to the bytes they must move (x and dy read, dx written once: the memory floor), and the
largest absolute difference of dx, dw and db from the first row's (dx is in x's bf16: one unit in
the last place of a value between 2 and 4 is 1.6e-2, a sum taken in another order).
"""

from __future__ import annotations

import argparse
import functools
import sys

import torch
from archdsl.codegen.run import shortconv
from triton.testing import do_bench

#: (layer, [(channels, bias)]) at B 32, T 512
CASES = {
    "gdn GDN_100m": [(1024, False)] * 3,
    "mamba2 Mamba2_100m": [(1792, True), (64, True), (64, True)],
}
SETTINGS = [
    {"kernel": "halo", "bt": 32, "bc": 64, "warps": 4, "seg": 32},  # the setting measured before
    {"kernel": "halo", "bt": 16, "bc": 64, "warps": 8, "seg": 16},
    *(
        {"kernel": "walk", "bt": bt, "bc": bc, "warps": warps, "seg": seg}
        for bt, bc, warps, seg in [
            (16, 64, 8, 128),
            (16, 64, 8, 64),
            (16, 64, 8, 256),
            (16, 64, 8, 512),
            (16, 64, 4, 128),
            (32, 64, 8, 128),
            (16, 128, 8, 128),
            (16, 32, 4, 128),  # shortconv.BACKWARD's default (benchmarks/results/chunked-7/)
            (16, 32, 4, 256),
            (16, 32, 2, 128),
        ]
    ),
]


def problems(convs, N=32, T=512, K=4):
    g = torch.Generator(device="cuda").manual_seed(0)
    out = []
    for C, bias in convs:
        wide = torch.randn(N, T, 2 * C, device="cuda", generator=g).bfloat16()
        w = 0.5 * torch.randn(C, K, device="cuda", generator=g)
        b = [torch.randn(C, device="cuda", generator=g)] if bias else []
        out.append(([wide[..., C:], w, *b], torch.randn(N, T, C, device="cuda", generator=g)))
    return out


def backward_all(probs) -> list:
    return [shortconv._backward(*xs, dy=dy, silu=True) for xs, dy in probs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="write the markdown table here too")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA device: expected a GPU (the kernels are timed)", file=sys.stderr)
        sys.exit(2)
    head = "| layer | kernel | bt x bc | warps | seg | bwd ms | GB/s | max diff (dx, dw, db) |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for name, convs in CASES.items():
        probs, first = problems(convs), None
        floor = sum(
            xs[0].numel() * 2 * xs[0].element_size() + dy.numel() * dy.element_size() for xs, dy in probs
        )
        for setting in SETTINGS:
            shortconv.BACKWARD.update(setting)

            run = functools.partial(backward_all, probs)
            got = run()
            ms = do_bench(run, warmup=10, rep=100)
            first = first or got
            diff = [
                max((a.float() - e.float()).abs().max().item() for a, e in zip(g, f))
                for g, f in zip(got, first)
            ]
            st = setting
            cells = [name, st["kernel"], f"{st['bt']} x {st['bc']}", st["warps"], st["seg"], f"{ms:.3f}"]
            cells += [f"{floor / ms / 1e6:.0f}", f"{max(diff):.1e}"]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
            print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
