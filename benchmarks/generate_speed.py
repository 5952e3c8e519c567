"""Sampling speed of a whole LM on one GPU: ``generate`` with each byte's step eager against the step
replayed as a CUDA graph (``archdsl/lm/generate.py``, ``GraphedStep``).

Each model is a spec LM at a preset, built as ``archdsl train`` builds it (the triton backend, depth
from the preset or 20), fp32 weights as ``archdsl sample`` loads them, random initialisation (the
speed does not depend on the weights); each in fp32 and under bf16 autocast (``--precision``). A
64-byte prompt, then ``--bytes`` bytes; each side is timed after a first run of the same length
(compilation, autotuning and the capture are not timed), with a device sync at the end. The greedy
bytes of both sides are compared.

    python benchmarks/generate_speed.py --models e88:E88_d12h32 gdn:GDN_100m specs/mamba2.rnn:Mamba2_100m
"""

from __future__ import annotations

import argparse
import time

import torch

from archdsl.lm.config import ModelConfig
from archdsl.lm.zoo import build_model


def timed(lm, prompt, n: int, graphs: bool, bf16: bool) -> tuple[float, torch.Tensor]:
    """(seconds of a run of ``n`` greedy bytes after ``prompt``, the bytes), after a first run;
    ``bf16``: under bf16 autocast, as ``archdsl train`` evaluates on a GPU (its cast cache off on both
    sides: ``GraphedStep`` captures without it)."""
    with torch.autocast("cuda", torch.bfloat16, enabled=bf16, cache_enabled=False):
        lm.generate(prompt, n, temperature=0, graphs=graphs)
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = lm.generate(prompt, n, temperature=0, graphs=graphs)
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["e88:E88_d12h32", "gdn:GDN_100m"], help="SPEC:PRESET")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--bytes", type=int, default=256)
    ap.add_argument("--precision", nargs="*", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    args = ap.parse_args()
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}, {args.bytes} bytes"
    )
    print("| model | params | depth | precision | eager ms/byte | graphs ms/byte | speed-up | same bytes |")
    print("|---|---|---|---|---|---|---|---|")
    for item in args.models:
        spec, _, preset = item.partition(":")
        lm = build_model(ModelConfig(spec, preset=preset or None, backend="triton"))
        lm = lm.cuda().eval()
        prompt = torch.randint(0, 256, (args.batch, 64), generator=torch.Generator().manual_seed(0))
        for precision in args.precision:
            bf16 = precision == "bf16"
            eager, a = timed(lm, prompt, args.bytes, False, bf16)
            graphs, b = timed(lm, prompt, args.bytes, True, bf16)
            per = [1e3 * s / args.bytes for s in (eager, graphs)]
            size = f"{lm.info['params'] / 1e6:.1f}M"
            cells = [item, size, str(len(lm.mixers)), precision, *(f"{p:.2f}" for p in per)]
            print(
                "| " + " | ".join([*cells, f"{per[0] / per[1]:.1f}x", str(torch.equal(a, b))]) + " |",
                flush=True,
            )
        del lm
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
