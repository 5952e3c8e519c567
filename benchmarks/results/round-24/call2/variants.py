"""Writes the modules of round 24's call 2 (run on the CPU, from the checkout): every E88 benchmark
shape and E75h4n32 at fixed plans, the loop at checkpoint stride 16 and at stride 1 with four
variants of the generator's switches, named for benchmarks/module_ab.py:

    s16      checkpoint stride 16 (the segments recomputed)
    s1       stride 1: the forward keeps every step's state and delta; the reverse walk loads one ahead
    s1r      stride 1 keeping the states only: the walk recomputes delta from them (fused.KEEP_STASH)
    s1a2     stride 1, the walk's loads two steps ahead (fused_backward.AHEAD_HISTORY)
    s1ra2    both
    s1cs     stride 1, the histories stored with cache_modifier=".cs" (fused.HISTORY_STORE)

    python benchmarks/results/round-24/call2/variants.py OUTDIR
"""

import shutil
import sys
from pathlib import Path

from archdsl.codegen import build_cell
from archdsl.codegen.emit import fused, fused_backward

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file

SHAPES = {
    "d12h32": ("specs/e88.rnn", "E88_d12h32", {}, [(8, 1), (16, 2)]),
    "h32n16": ("specs/e88.rnn", "E88_h32n16", {}, [(8, 1), (16, 1)]),
    "h24n24": ("specs/e88.rnn", "E88_h24n24", {}, [(32, 2)]),
    "h8n64": ("specs/e88.rnn", "E88_h8n64", {}, [(16, 1)]),
    "e75h4n32": ("specs/e75.rnn", None, {"dim": 1920, "heads": 4, "n": 32}, [(8, 1), (4, 1)]),
}
VARIANTS = {  # name -> (chunk, keep stash, ahead, store modifier)
    "s16": (16, True, 1, ""),
    "s1": (1, True, 1, ""),
    "s1r": (1, False, 1, ""),
    "s1a2": (1, True, 2, ""),
    "s1ra2": (1, False, 2, ""),
    "s1cs": (1, True, 1, ".cs"),
}


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    for shape, (path, preset, ov, plans) in SHAPES.items():
        layer = instantiate(parse_file(path), preset, overrides=ov).layer
        spec = Path(path).stem
        for tile, warps in plans:
            for name, (chunk, keep, ahead, mod) in VARIANTS.items():
                if chunk == 16 or (tile, warps) == plans[-1] or name == "s1":
                    fused.KEEP_STASH, fused.HISTORY_STORE, fused_backward.AHEAD_HISTORY = keep, mod, ahead
                    cc = build_cell(layer, chunk, tile, warps)
                    target = out / f"{name}-{shape}_{spec}_t{tile}w{warps}.py"
                    shutil.copy(cc.path, target)
                    print(target.name, flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
