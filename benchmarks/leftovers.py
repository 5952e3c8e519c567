"""What a layer's forward (and forward+backward) leaves to Python's cycle collector: tensors held in
reference cycles are freed only when the collector runs, which counts Python objects, not GPU bytes,
so they raise the peak memory of whatever runs next. For each spec, with archdsl/recompute.py on and
off: the tensors and functions a collection finds after one call, and the GPU memory still allocated
after ten calls, before and after a collection.

    python benchmarks/leftovers.py --specs gla:GLA_100m gdn:GDN_100m --B 8 --T 512
    TRITON_INTERPRET=1 python benchmarks/leftovers.py --specs gla:test --device cpu
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from saved_memory import build  # noqa: E402


def call(layer, x, backward: bool, dev: str) -> None:
    with torch.autocast(dev, dtype=torch.bfloat16):
        y = layer(x)[0]
    if backward:
        torch.autograd.grad(y, [x, *layer.parameters()], torch.ones_like(y), allow_unused=True)


def found(layer, x, backward: bool, dev: str) -> tuple[list, list]:
    """(shapes of tensors, qualified names of functions) one call leaves to the collector."""
    gc.collect()
    gc.disable()
    try:
        call(layer, x, backward, dev)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        tensors = [(tuple(o.shape), str(o.dtype)) for o in gc.garbage if isinstance(o, torch.Tensor)]
        fns = sorted({o.__qualname__ for o in gc.garbage if type(o).__name__ == "function"})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    return tensors, [f for f in fns if "GridExecutor" not in f]  # the interpreter's own


def held(layer, x, backward: bool, dev: str) -> tuple[float, float]:
    """GiB allocated after ten calls with the collector off, then after one collection."""
    if dev != "cuda":
        return float("nan"), float("nan")
    gc.collect()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    gc.disable()
    try:
        for _ in range(10):
            call(layer, x, backward, dev)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated() - base
        gc.collect()
        after = torch.cuda.memory_allocated() - base
    finally:
        gc.enable()
    return before / 2**30, after / 2**30


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", nargs="+", default=["gla:GLA_100m"], help="SPEC:PRESET")
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--T", type=int, default=512)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    for item in args.specs:
        name, preset = item.split(":")
        layer = build(f"specs/{name}.rnn", preset, {}, strategy="chunked").to(args.device)
        x = torch.randn(args.B, args.T, layer.ir.dim, device=args.device, requires_grad=True)
        for recompute in ("1", "0"):
            os.environ["ARCHDSL_RECOMPUTE"] = recompute
            for backward in (False, True):
                call(layer, x, backward, args.device)  # compiled and warm
                tensors, fns = found(layer, x, backward, args.device)
                before, after = held(layer, x, backward, args.device)
                kind = "fwd+bwd" if backward else "fwd"
                print(f"{item} recompute={recompute} {kind}: after 10 calls {before:.2f} GiB held, "
                      f"{after:.2f} after a collection; one call leaves {len(tensors)} tensors "
                      f"{tensors[:8]} and functions {fns[:8]}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
