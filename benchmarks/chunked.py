"""Whole-layer benchmark of the chunked strategy (codegen/run/chunked.py) on one GPU.

For gdn.rnn at GDN_100m, mamba2.rnn at Mamba2_100m, e88.rnn at E88_d12h32 with ``nonlin =
identity`` and gla.rnn at GLA_100m: the chunked layer against the same spec on the sequential loop
(same weights), and against fla's ``GatedDeltaNet`` (chunk mode), mamba_ssm's ``Mamba2`` and fla's
``GatedLinearAttention`` (chunk mode) when they import, with the
same weights copied in through the zoo's tables (benchmarks/oracle_maps.py; the specs and the
libraries both run their short convolutions). B 32, T 512,
bf16 autocast; forward and forward+backward (``triton.testing.do_bench``), each side's first call
(compile + autotune), and the relative RMS difference of each side's output to the chunked layer's.

    python benchmarks/chunked.py --chunk 32 64 --out chunked.md   (results: benchmarks/results/chunked-gpu.md)
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import triton
from triton.testing import do_bench

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer

CASES = {
    "gdn GDN_100m": ("specs/gdn.rnn", "GDN_100m", {}),
    "mamba2 Mamba2_100m": ("specs/mamba2.rnn", "Mamba2_100m", {}),
    "e88 E88_d12h32 identity": ("specs/e88.rnn", "E88_d12h32", {"nonlin": "identity"}),
    "gla GLA_100m": ("specs/gla.rnn", "GLA_100m", {}),
    "retnet RetNet_100m": ("specs/retnet.rnn", "RetNet_100m", {}),
}


def rel_rms(a, b) -> float:
    a, b = a.float(), b.float()
    return ((a - b).pow(2).mean().sqrt() / (b.pow(2).mean().sqrt() + 1e-30)).item()


def timed(module, x):
    """(first fwd+bwd call s, fwd ms, fwd+bwd ms, output, peak GiB of a fwd+bwd) under bf16 autocast."""
    params = [p for p in module.parameters() if p.requires_grad]
    xg = x.clone().requires_grad_(True)

    def fwd():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = module(xg)
        return out[0] if isinstance(out, tuple) else out

    def fwdbwd():
        y = fwd()
        torch.autograd.grad(y, [xg, *params], dy, allow_unused=True)

    torch.cuda.synchronize()
    start = time.perf_counter()
    y = fwd()
    dy = torch.randn_like(y)
    torch.autograd.grad(y, [xg, *params], dy, allow_unused=True)
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    f, fb = do_bench(fwd, warmup=5, rep=50), do_bench(fwdbwd, warmup=5, rep=50)
    torch.cuda.reset_peak_memory_stats()
    fwdbwd()
    peak = torch.cuda.max_memory_allocated() / 2**30
    return first, f, fb, fwd().detach(), peak


def peer(spec: str):
    """The library layer that defines ``spec``, with the spec's weights copied in through its table in
    benchmarks/oracle_maps.py (the short convolutions included on both sides)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from oracle import copy_weights, prepare_libraries
    from oracle_maps import LAYERS

    prepare_libraries()  # fla's Triton backward on Hopper, Mamba-1's scan stand-in
    _, _, build, rows = LAYERS[spec]

    def make(ours: RecurrentLayer):
        lib = build(ours.ir)
        copy_weights(ours, lib, rows)
        return lib

    return make


PEERS = {
    "gdn GDN_100m": ("fla GatedDeltaNet (chunk, short convolutions)", "gdn"),
    "mamba2 Mamba2_100m": ("mamba_ssm Mamba2 (use_mem_eff_path=False)", "mamba2"),
    "gla GLA_100m": ("fla GatedLinearAttention (chunk)", "gla"),
    "retnet RetNet_100m": ("fla MultiScaleRetention (chunk)", "retnet"),
}


def profile(label: str, module, x, rows: int = 16, ops: bool = False) -> float:
    """Prints the ``rows`` CUDA kernels that take most of three forward+backward, after the timed runs
    (``ops``: then the PyTorch operators that launched the most GPU time, by input shapes); returns
    the GPU time of one (ms: the kernels' summed time, the table's "Self CUDA time total" / 3), which
    launch overhead and host jitter do not move as they move ``do_bench``'s wall time."""
    params = [p for p in module.parameters() if p.requires_grad]
    xg = x.clone().requires_grad_(True)
    kinds = [torch.profiler.ProfilerActivity.CUDA] + ([torch.profiler.ProfilerActivity.CPU] if ops else [])
    with torch.profiler.profile(activities=kinds, record_shapes=ops) as prof:
        for _ in range(3):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = module(xg)
            y = y[0] if isinstance(y, tuple) else y
            torch.autograd.grad(y, [xg, *params], torch.ones_like(y), allow_unused=True)
        torch.cuda.synchronize()
    print(f"profile: {label} (3 forward+backward)", flush=True)
    events = prof.key_averages()
    print(events.table(sort_by="cuda_time_total", row_limit=rows), flush=True)
    if ops:
        by_shape = prof.key_averages(group_by_input_shape=True)
        print(
            by_shape.table(sort_by="device_time_total", row_limit=rows, max_name_column_width=40), flush=True
        )
    return sum(e.self_device_time_total for e in events) / 3 / 1000


def bench_case(
    name: str,
    B: int,
    T: int,
    chunks: list[int],
    prof: dict | None = None,
    peers: bool = True,
    loop: bool = True,
    products: tuple[str, ...] = ("tf32",),
) -> list[str]:
    """The table's rows of one case; ``prof``: ``profile``'s options (rows, ops), None: no profile;
    one chunked side per chunk and ``products`` setting (``archdsl compile --products``)."""
    path, preset, sets = CASES[name]
    layer = instantiate(parse_file(path), preset, sets).layer
    sides = []
    for chunk in chunks:
        for kind in products:
            opts = dict(chunk=chunk, strategy="chunked", products=kind)
            side = RecurrentLayer(layer, backend="triton", seed=0, **opts).cuda()
            sides.append((f"archdsl chunked (C {chunk}" + (", half)" if kind == "half" else ")"), side))
    ours = sides[0][1]
    if loop:
        sides.append(
            (
                "archdsl sequential loop",
                RecurrentLayer(layer, backend="triton", seed=0, strategy="loop").cuda(),
            )
        )
    for _, side in sides[1:]:
        side.load_state_dict(ours.state_dict())
    x = torch.randn(B, T, layer.dim, device="cuda")
    if peers and name in PEERS:
        label, spec = PEERS[name]
        try:
            sides.append((label, peer(spec)(ours).cuda()))  # the libraries load only when benched
        except Exception as e:  # not installed, or an incompatible version: say so in the table
            sides.append((f"{label}: unavailable ({type(e).__name__}: {str(e)[:80]})", None))
    rows, base = [], None
    for label, module in sides:
        if module is None:
            rows.append(f"| {name} | {label} | | | | | | | |")
            continue
        try:
            first, fwd, fb, y, peak = timed(module, x)
        except Exception as e:  # a launch setting that does not fit this GPU: say so in the table
            rows.append(f"| {name} | {label}: failed ({type(e).__name__}: {str(e)[:80]}) | | | | | | | |")
            continue
        if base is None:
            base = (fb, y)
        gpu = f"{profile(f'{name}, {label}', module, x, **prof):.2f}" if prof is not None else ""
        rows.append(
            f"| {name} | {label} | {fwd:.2f} | {fb:.2f} | {fb / base[0]:.2f}x | {gpu} | {first:.1f} | "
            f"{rel_rms(y, base[1]):.1e} | {peak:.1f} |"
        )
        del module
        torch.cuda.empty_cache()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=512)
    ap.add_argument("--chunk", type=int, nargs="*", default=[64], help="one chunked side per chunk")
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--out", help="write the markdown table here too")
    ap.add_argument("--no-peers", action="store_true", help="archdsl's sides only (no library compile)")
    ap.add_argument(
        "--profile", action="store_true", help="print each side's top CUDA kernels; the GPU time column"
    )
    ap.add_argument("--no-loop", action="store_true", help="no sequential-loop side")
    ap.add_argument("--rows", type=int, default=16, help="kernels in each --profile table")
    ap.add_argument("--ops", action="store_true", help="with --profile: the operators by input shapes too")
    ap.add_argument(
        "--conv",
        nargs="*",
        default=[],
        metavar="fwd.KEY=N|bwd.KEY=N",
        help="the short convolutions' launch settings (codegen/run/shortconv.py FORWARD, BACKWARD)",
    )
    ap.add_argument(
        "--launch",
        nargs="*",
        default=[],
        metavar="KEY=N",
        help="launch settings of the chunked kernels (chunked_common.LAUNCH), e.g. token_stages=1",
    )
    ap.add_argument(
        "--products",
        nargs="*",
        default=["tf32"],
        choices=["tf32", "half"],
        help="one chunked side per setting of archdsl compile --products (default tf32)",
    )
    ap.add_argument("--commit", default="", help="the archdsl commit measured (default: git's HEAD)")
    args = ap.parse_args()
    from archdsl.codegen.run import chunked_common

    for item in args.launch:
        key, _, value = item.partition("=")
        if key not in chunked_common.LAUNCH or not value.isdigit():
            ap.error(
                f"--launch: expected KEY=N with KEY one of {', '.join(chunked_common.LAUNCH)}, found {item!r}"
            )
        chunked_common.LAUNCH[key] = int(value)
    from archdsl.codegen.run import shortconv

    for item in args.conv:
        key, _, value = item.partition("=")
        side, _, name = key.partition(".")
        table = {"fwd": shortconv.FORWARD, "bwd": shortconv.BACKWARD}.get(side, {})
        if name not in table or not value.isdigit():
            ap.error(f"--conv: expected fwd.KEY=N or bwd.KEY=N (shortconv.FORWARD/BACKWARD), found {item!r}")
        table[name] = int(value)
    commit = (
        args.commit
        or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    )
    lines = [
        f"# Chunked strategy, whole layer (B {args.B}, T {args.T}, bf16 autocast)",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {torch.cuda.get_device_name()}, "
        f"torch {torch.__version__}, triton {triton.__version__}, python {platform.python_version()}, "
        f"commit {commit.strip() or '?'}",
        "",
        "`python benchmarks/chunked.py " + " ".join(f"--{k} {v}" for k, v in (("B", args.B), ("T", args.T)))
        + f" --chunk {' '.join(map(str, args.chunk))}"
        + (f" --launch {' '.join(args.launch)}" if args.launch else "")
        + (f" --conv {' '.join(args.conv)}" if args.conv else "")
        + (f" --products {' '.join(args.products)}" if args.products != ["tf32"] else "")
        + "`",
        "",
        "Times in ms (do_bench); ratio: fwd+bwd over the chunked layer's; GPU: the profiler's summed kernel "
        "time of one fwd+bwd (with --profile); first call: compile + autotune "
        "of the first forward+backward, s; diff: relative RMS of the output to the chunked layer's; "
        "peak: GiB allocated during one forward+backward (the weights included).",
        "",
        "| layer | side | fwd | fwd+bwd | ratio | GPU | first call | diff | peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name in args.cases:
        lines += bench_case(
            name,
            args.B,
            args.T,
            args.chunk,
            {"rows": args.rows, "ops": args.ops} if args.profile else None,
            not args.no_peers,
            not args.no_loop,
            tuple(args.products),
        )
        print("\n".join(lines[-3:]), flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
