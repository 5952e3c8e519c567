"""A/B of the fused loop strategy: forward and forward+backward of every E88 benchmark shape and
E75h4n32 (inputs already projected, B 32, T 512, bf16), each autotuned as `archdsl` does on its first
call, with the per-step floor of each E88 shape at the plan it chose (benchmarks/floor.py) and,
optionally, flash-linear-attention's chunked GatedDeltaNet in the same process. Run it once per
installed archdsl (the base and the change) in one GPU session and compare the rows:

    python benchmarks/loop_ab.py --label base --fla --out base.md
    python benchmarks/loop_ab.py --label change --out change.md

``--chunk`` sets the loop's checkpoint stride (16, the default; 1 keeps every step's state and the
backward recomputes nothing). Each row reports the peak memory of one forward+backward.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from archdsl.codegen import compile_cell  # noqa: E402
from cell_bench import cell_inputs, fla_gdn, time_cell  # noqa: E402
from floor import measure  # noqa: E402

from archdsl.lang.checker import instantiate  # noqa: E402
from archdsl.lang.parser import parse_file  # noqa: E402

SHAPES = {
    "E88_d12h32": ("specs/e88.rnn", "E88_d12h32", {}),
    "E88_h32n16": ("specs/e88.rnn", "E88_h32n16", {}),
    "E88_h24n24": ("specs/e88.rnn", "E88_h24n24", {}),
    "E88_h8n64": ("specs/e88.rnn", "E88_h8n64", {}),
    "E75h4n32": ("specs/e75.rnn", None, {"dim": 1920, "heads": 4, "n": 32}),
}


def peak_mib(cc, ins, front) -> float:
    """Peak memory of one forward+backward above what was allocated before it (MiB)."""
    ins_g = {k: v.clone().requires_grad_(True) for k, v in ins.items()}
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    y = cc(ins_g, front)[0]
    torch.autograd.grad(y, list(ins_g.values()), torch.ones_like(y), allow_unused=True)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def run_shape(name, B, T, dtype, dev, chunk=16, graphs=False, tile=None, warps=None):
    """One shape's row; ``tile`` and ``warps`` fix the plan (None: autotuned, as on a first call)."""
    path, preset, ov = SHAPES[name]
    layer = instantiate(parse_file(path), preset, overrides=ov).layer
    ins, front = cell_inputs(layer, B, T, dtype, dev)
    cc = compile_cell(layer, chunk=chunk, tile=tile, num_warps=warps)
    fwd, fb, gpu = time_cell(cc, ins, front, B, T, dtype, graphs, gpu=True)
    plan = getattr(cc, "chosen", cc).plan
    tile, warps = plan.block[plan.split[-1]], plan.num_warps
    row = {"shape": name, "chunk": chunk, "fwd_ms": fwd, "fwdbwd_ms": fb, "tile": tile, "warps": warps}
    row["gpu_ms"] = gpu
    row["peak_mib"] = peak_mib(cc, ins, front)
    if path.endswith("e88.rnn"):
        s = layer.sizes  # the key axis as the kernel holds it: padded to a power of two
        f_fwd, f_bwd = measure(B, s["h"], plan.block["i"], s["j"], tile, warps, T)
        row.update(floor_fwd_ms=f_fwd, floor_fwdbwd_ms=f_fwd + f_bwd)
        if chunk == 1:  # the floor of the algorithm that runs: the backward recomputes nothing
            _, k_bwd = measure(B, s["h"], plan.block["i"], s["j"], tile, warps, T, kept=True)
            row.update(floor_kept_fwdbwd_ms=f_fwd + k_bwd)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=512)
    ap.add_argument("--fla", action="store_true", help="also time fla's chunked GDN (6x128, expand_v 2)")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="shape, or shape:tile:warps for a fixed plan")
    ap.add_argument("--chunk", type=int, default=16, help="the loop's checkpoint stride (1: every step)")
    ap.add_argument(
        "--graphs",
        action="store_true",
        help="time each side replayed as one CUDA graph: GPU time without the host's launch overhead",
    )
    ap.add_argument("--out")
    args = ap.parse_args()
    dev, dtype = "cuda", torch.bfloat16
    rows = []
    if args.fla:
        f_fwd, f_fb, f_gpu = fla_gdn(args.B, args.T, 6, 128, 256, dtype, dev, args.graphs, gpu=True)
        rows.append({"shape": "fla chunk GDN (6x128, expand_v 2)", "fwd_ms": f_fwd, "fwdbwd_ms": f_fb})
        rows[-1]["gpu_ms"] = f_gpu
        print(json.dumps(rows[-1]), flush=True)
    for name in args.shapes.split(","):
        name, *plan = name.split(":")
        try:
            rows.append(run_shape(name, args.B, args.T, dtype, dev, args.chunk, args.graphs, *map(int, plan)))
        except Exception as e:  # report and go on: the other shapes stay useful
            print(f"{name} failed: {type(e).__name__}: {e}", flush=True)
            continue
        print(json.dumps(rows[-1]), flush=True)
    head = (
        f"{args.label}: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"triton {triton.__version__}, B {args.B}, T {args.T}, bf16, checkpoint stride {args.chunk}, "
        f"{'CUDA-graph replay (GPU time)' if args.graphs else 'do_bench wall time'}"
    )
    lines = [
        head,
        "",
        "Floors (benchmarks/floor.py, at the plan chosen): with the segment recompute (the backward at"
        " a checkpoint stride above 1), and without it (kept: the backward at stride 1).",
        "",
        "GPU ms: forward+backward's summed kernel time (torch.profiler, three calls).",
        "",
        "| shape | plan | fwd ms | fwd+bwd ms | GPU ms | us/step | floor fwd+bwd ms | of floor "
        "| floor kept ms | of floor kept | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        plan = f"tile {r['tile']}, warps {r['warps']}" if "tile" in r else "-"
        cells = []
        for key in ("floor_fwdbwd_ms", "floor_kept_fwdbwd_ms"):
            floor = r.get(key)
            cells += [f"{floor:.3f}", f"{floor / r['fwdbwd_ms']:.0%}"] if floor else ["-", "-"]
        lines.append(
            f"| {r['shape']} | {plan} | {r['fwd_ms']:.3f} | {r['fwdbwd_ms']:.3f} | {r['gpu_ms']:.3f} | "
            f"{r['fwdbwd_ms'] / args.T * 1e3:.2f} | {' | '.join(cells)} | {r.get('peak_mib', 0):.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        with open(args.out.removesuffix(".md") + ".json", "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
