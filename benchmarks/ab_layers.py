"""Whole layers of two archdsl builds, timed in one process each on the same GPU: forward + backward
of ``archdsl.Layer(spec, preset)`` (projections included) at B × T in bf16 autocast, after its first
call (compilation and tuning) is done. Run it once per build with that build on ``PYTHONPATH``:

    PYTHONPATH=old python benchmarks/ab_layers.py --label old --out ab.jsonl
    PYTHONPATH=new python benchmarks/ab_layers.py --label new --out ab.jsonl
    python benchmarks/ab_layers.py --table ab.jsonl

Only ``archdsl.Layer`` is used, so any build with the Python API can be compared.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

LAYERS = [
    ("e88", "E88_d12h32"),
    ("e88", "E88_h32n16"),
    ("e75", "E75h4n32"),
    ("gdn", "GDN_100m"),
    ("mamba2", "Mamba2_100m"),
    ("lstm", "LSTM_100m"),
]


def time_layer(spec: str, preset: str, B: int, T: int, opts: dict | None = None) -> dict:
    import torch
    from triton.testing import do_bench

    import archdsl

    torch.manual_seed(0)
    layer = archdsl.Layer(spec, preset=preset, backend="triton", seed=0, **(opts or {})).cuda()
    x = torch.randn(B, T, layer.ir.dim, device="cuda", requires_grad=True)

    def fwd():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return layer(x)[0]

    def fwd_bwd():
        fwd().float().sum().backward()

    t0 = time.perf_counter()
    fwd_bwd()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    with torch.no_grad():
        f = do_bench(fwd, warmup=5, rep=50)
    fb = do_bench(fwd_bwd, warmup=5, rep=50)
    return {"first_s": first, "fwd_ms": f, "fwd_bwd_ms": fb}


def table(path: str) -> str:
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    by = {(r["label"], r["layer"]): r for r in rows}
    head = "| layer | " + " | ".join(f"{lb} fwd+bwd ms" for lb in labels) + " | ratio |"
    out = [head, "|---" * (len(labels) + 2) + "|"]
    for layer in dict.fromkeys(r["layer"] for r in rows):
        cells = [by.get((lb, layer), {}) for lb in labels]
        ms = [c.get("fwd_bwd_ms") for c in cells]
        text = [f"{m:.2f}" if m else c.get("error", "—")[:60] for m, c in zip(ms, cells)]
        ratio = f"{ms[-1] / ms[0]:.2f}" if len(ms) > 1 and all(ms) else "—"
        out.append(f"| {layer} | " + " | ".join(text) + f" | {ratio} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label")
    ap.add_argument("--out")
    ap.add_argument("--table", help="print the Markdown table of a results file and exit")
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=512)
    ap.add_argument("--only", help="comma-separated presets to time (default: all of LAYERS)")
    ap.add_argument("--plan", help="a fixed launch plan instead of tuning, e.g. tile=8,num_warps=1")
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    opts = {k: int(v) for k, v in (kv.split("=") for kv in args.plan.split(","))} if args.plan else {}
    only = set(args.only.split(",")) if args.only else None
    for spec, preset in LAYERS:
        if only is not None and preset not in only:
            continue
        layer = f"{spec} {preset} {args.plan or 'tuned'}"
        row = {"label": args.label, "layer": layer, "B": args.B, "T": args.T}
        try:
            row.update(time_layer(spec, preset, args.B, args.T, opts))
        except Exception as e:  # one layer's failure is a row, and the next layer runs
            row["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
