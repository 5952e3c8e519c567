"""Kernel benchmark of the recurrent part (issue: compile a spec to fused Triton kernels).

Times forward and forward+backward of the compiled cell (inputs already projected), checks it against
the fp32 reference at the same shape, sweeps the tile/warps/checkpoint settings, compares with
flash-linear-attention's chunked GatedDeltaNet kernel, and measures the backward's memory at C = 1,
16, 64. Prints Markdown; run on a GPU:

    python benchmarks/cell_bench.py --out benchmarks/results/kernels-h100.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

import torch
import triton
from archdsl.codegen import compile_cell
from triton.testing import do_bench

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer

SHAPES = {
    "E88_d12h32": ("specs/e88.rnn", {"dim": 3200, "heads": 12, "n": 32}),
    "E88_h32n16": ("specs/e88.rnn", {"dim": 2432, "heads": 32, "n": 16}),
    "E75h4n32": ("specs/e75.rnn", {"dim": 1920, "heads": 4, "n": 32}),
}


def cell_inputs(layer, B, T, dtype, dev, seed=0):
    g = torch.Generator(device=dev).manual_seed(seed)
    ins = {
        n: torch.randn(B, T, *(layer.sizes[a] for a in ax), device=dev, generator=g).to(dtype)
        for n, ax in layer.inputs().items()
    }
    m = RecurrentLayer(layer, seed=seed).to(dev)
    return ins, m.frontier_values()


def rel_rms(a, b) -> float:
    a, b = a.float(), b.float()
    return ((a - b).pow(2).mean().sqrt() / (b.pow(2).mean().sqrt() + 1e-30)).item()


def timed(fn, graphs: bool = False) -> float:
    """ms of one call of ``fn``: ``do_bench``'s wall time, or with ``graphs`` the calls replayed as one
    CUDA graph (``do_bench_cudagraph``: GPU time, no host launch overhead; wall time where ``fn`` cannot
    be captured, with a line saying so)."""
    if graphs:
        from triton.testing import do_bench_cudagraph

        try:
            return do_bench_cudagraph(fn, rep=50)
        except Exception as e:  # noqa: BLE001 - reported, and the wall time stands in
            print(f"CUDA graph capture failed ({type(e).__name__}: {e}); wall time instead", flush=True)
    return do_bench(fn, warmup=5, rep=50)


def gpu_ms(fn, calls: int = 3) -> float:
    """GPU time of one call of ``fn`` (ms): the profiler's summed kernel time over ``calls`` calls,
    which neither the host's launch overhead nor its jitter moves."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return sum(e.self_device_time_total for e in prof.key_averages()) / calls / 1000


def time_cell(cc, ins, front, B, T, dtype, graphs: bool = False, gpu: bool = False):
    """(forward ms, forward+backward ms) by ``timed``, and with ``gpu`` forward+backward's GPU time."""
    ins_g = {k: v.clone().requires_grad_(True) for k, v in ins.items()}

    def fwd():
        return cc(ins_g, front)[0]

    y = fwd()
    dy = torch.randn_like(y)

    def fwdbwd():
        y = cc(ins_g, front)[0]
        torch.autograd.grad(y, list(ins_g.values()), dy, allow_unused=True)

    fwdbwd()  # the first call tunes the plan, outside any graph
    torch.cuda.synchronize()
    times = timed(fwd, graphs), timed(fwdbwd, graphs)
    return (*times, gpu_ms(fwdbwd)) if gpu else times


def check(layer, cc, ins, front, T_check):
    """Kernel vs reference (fp32) on the first T_check steps: output, final state, every gradient."""
    from archdsl.reference import reference_cell

    short = {k: v[:, :T_check].float().clone().requires_grad_(True) for k, v in ins.items()}
    fr = {k: v.clone().requires_grad_(True) for k, v in front.items()}
    y1, f1 = reference_cell(layer, short, fr)
    short2 = {
        k: v.detach().clone().to(next(iter(ins.values())).dtype).requires_grad_(True)
        for k, v in short.items()
    }
    fr2 = {k: v.detach().clone().requires_grad_(True) for k, v in front.items()}
    y2, f2 = cc(short2, fr2)
    dy = torch.randn_like(y1)
    g1 = torch.autograd.grad(
        (y1 * dy).sum() + sum(f.sum() for f in f1.values()),
        [*short.values(), *fr.values()],
        allow_unused=True,
    )
    g2 = torch.autograd.grad(
        (y2.float() * dy).sum() + sum(f.sum() for f in f2.values()),
        [*short2.values(), *fr2.values()],
        allow_unused=True,
    )
    errs = {"y": rel_rms(y2, y1), **{f"state {s}": rel_rms(f2[s], f1[s]) for s in f1}}
    names = [f"d{n}" for n in short] + [f"d{layer.graph[i].op.value}#{i}" for i in fr]
    errs.update({n: rel_rms(a, b) for n, a, b in zip(names, g2, g1) if a is not None and b is not None})
    return errs


def fla_gdn(B, T, H, K, V, dtype, dev, graphs: bool = False, gpu: bool = False):
    """fla's chunked GatedDeltaNet kernel at these sizes, timed as ``time_cell`` times a cell."""
    import fla.ops.common.chunk_o as chunk_o

    chunk_o.TRITON_ABOVE_3_7_1 = True  # see ../shared/device/README.md: gradients checked there
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    q = torch.randn(B, T, H, K, device=dev, dtype=dtype, requires_grad=True)
    k = torch.nn.functional.normalize(
        torch.randn(B, T, H, K, device=dev, dtype=dtype), dim=-1
    ).requires_grad_(True)
    v = torch.randn(B, T, H, V, device=dev, dtype=dtype, requires_grad=True)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, device=dev, dtype=torch.float32)).requires_grad_(
        True
    )
    beta = torch.rand(B, T, H, device=dev, dtype=dtype).sigmoid().requires_grad_(True)

    def fwd():
        return chunk_gated_delta_rule(q, k, v, g, beta, output_final_state=False)[0]

    o = fwd()
    do = torch.randn_like(o)

    def fwdbwd():
        o = fwd()
        torch.autograd.grad(o, [q, k, v, g, beta], do)

    fwdbwd()  # compile and autotune before timing
    torch.cuda.synchronize()
    times = timed(fwd, graphs), timed(fwdbwd, graphs)
    return (*times, gpu_ms(fwdbwd)) if gpu else times


def fla_gradient_check(H, K, V, dev, B=4, T=512):
    """fla's chunked GDN (bf16, Triton backward forced on Hopper) against its own step-by-step
    recurrent kernel in fp32 at the model's head shape: relative RMS error of every gradient."""
    import fla.ops.common.chunk_o as chunk_o

    chunk_o.TRITON_ABOVE_3_7_1 = True
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule

    gen = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(B, T, H, K, device=dev, generator=gen)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, device=dev, generator=gen), dim=-1)
    v = torch.randn(B, T, H, V, device=dev, generator=gen)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, device=dev, generator=gen))
    beta = torch.rand(B, T, H, device=dev, generator=gen)
    do = torch.randn(B, T, H, V, device=dev, generator=gen)
    out = {}
    for name, fn, dt in (
        ("chunk bf16", chunk_gated_delta_rule, torch.bfloat16),
        ("recurrent fp32", fused_recurrent_gated_delta_rule, torch.float32),
    ):
        ins = [t.to(dt).requires_grad_(True) for t in (q, k, v)]
        ins += [g.clone().requires_grad_(True), beta.to(dt).requires_grad_(True)]
        o = fn(*ins, output_final_state=False)[0]
        out[name] = torch.autograd.grad(o.float(), ins, do)
    names = ("dq", "dk", "dv", "dg", "dbeta")
    return {n: rel_rms(a, b) for n, a, b in zip(names, out["chunk bf16"], out["recurrent fp32"])}


def gemm_floor(B, T, d, dtype, dev, rep=50) -> float:
    """ms for T sequential cuBLAS GEMMs [B, d] x [d, d]: the floor of a dense recurrence."""
    h = torch.randn(B, d, device=dev, dtype=dtype)
    w = torch.randn(d, d, device=dev, dtype=dtype)

    def gemms():
        x = h
        for _ in range(T):
            x = x @ w
        return x

    return do_bench(gemms, warmup=5, rep=rep)


def e1_dense(B, T, d, dtype, dev):
    """E1 at width d: the dense strategy (per-step GEMM + fused step kernel) against the floor of
    T sequential cuBLAS GEMMs of the same shape ([B, d] x [d, d])."""
    layer = instantiate(parse_file("specs/e1.rnn"), overrides={"dim": d, "expansion": 1}).layer
    ins, front = cell_inputs(layer, B, T, dtype, dev)
    cc = compile_cell(layer, chunk=16)
    fwd, fb = time_cell(cc, ins, front, B, T, dtype)
    return fwd, fb, gemm_floor(B, T, d, dtype, dev), getattr(cc, "chosen", cc)


def backward_memory(cc, ins, front) -> tuple[int, int]:
    """(bytes the forward keeps for the backward beyond its output, peak extra bytes in the backward)."""
    ins_g = {k: v.clone().requires_grad_(True) for k, v in ins.items()}
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    y = cc(ins_g, front)[0]
    torch.cuda.synchronize()
    saved = torch.cuda.memory_allocated() - before - y.numel() * y.element_size()
    dy = torch.ones_like(y)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    torch.autograd.grad(y, list(ins_g.values()), dy, allow_unused=True)
    torch.cuda.synchronize()
    return saved, torch.cuda.max_memory_allocated() - start


def floor_line(B, T, layer, best, results) -> str:
    """The per-step floor (benchmarks/floor.py) at the kernel's grid, and the fraction achieved."""
    from floor import measure

    fwd_floor, bwd_floor = measure(
        B, layer.sizes["h"], layer.sizes["i"], layer.sizes["j"], best[2], best[3], T
    )
    fwd, fb = best[0], best[1]
    return (
        f"- E88_d12h32 per-step latency: forward {fwd / T * 1e3:.2f} us/step, forward+backward "
        f"{fb / T * 1e3:.2f} us/step. Floor (benchmarks/floor.py: the same recurrence at the same grid, "
        f"tile and warps with no memory traffic): forward {fwd_floor:.3f} ms "
        f"({fwd_floor / T * 1e3:.2f} us/step), "
        f"forward+backward {fwd_floor + bwd_floor:.3f} ms ({(fwd_floor + bwd_floor) / T * 1e3:.2f} us/step); "
        f"achieved fraction of the floor: forward {fwd_floor / fwd:.0%}, forward+backward "
        f"{(fwd_floor + bwd_floor) / fb:.0%}"
    )


def compiled_reference_line(name, B, T, timeout) -> str:
    """torch.compile of the reference loop, in a child process with a time limit."""
    cmd = [sys.executable, __file__, "--time-compiled-reference", name, "--B", str(B), "--T", str(T)]
    t0 = time.time()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return (
            f"- {name}: torch.compile of the reference loop did not finish within {timeout} s (B {B}, T {T})"
        )
    last = (out.stdout.strip().splitlines() or ["no output: " + out.stderr[-300:]])[-1]
    return f"- {name}: torch.compile of the reference loop ({time.time() - t0:.0f} s in all): {last}"


def time_compiled_reference(name, B, T) -> None:
    from archdsl.reference import reference_cell

    path, ov = SHAPES[name]
    layer = instantiate(parse_file(path), overrides=ov).layer
    ins, front = cell_inputs(layer, B, T, torch.bfloat16, "cuda")
    ins = {k: v.float() for k, v in ins.items()}
    fn = torch.compile(lambda i, f: reference_cell(layer, i, f)[0])
    t0 = time.time()
    fn(ins, front)
    torch.cuda.synchronize()
    compile_s = time.time() - t0
    ig = {k: v.clone().requires_grad_(True) for k, v in ins.items()}
    y = fn(ig, front)
    dy = torch.randn_like(y)

    def fb():
        torch.autograd.grad(fn(ig, front), list(ig.values()), dy, allow_unused=True)

    fb()
    torch.cuda.synchronize()
    fwd = do_bench(lambda: fn(ins, front), warmup=2, rep=20)
    both = do_bench(fb, warmup=2, rep=20)
    print(f"compiled in {compile_s:.0f} s; fwd {fwd:.2f} ms, fwd+bwd {both:.2f} ms (fp32)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=512)
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="time every tile/warps/C setting")
    ap.add_argument("--e1", action="store_true", help="also E1 at d 1312 (dense strategy)")
    ap.add_argument("--fla-check", action="store_true", help="check fla's forced Hopper backward")
    ap.add_argument(
        "--compiled-reference",
        type=int,
        default=0,
        metavar="SECONDS",
        help="also time torch.compile of the reference loop, given this long to compile",
    )
    ap.add_argument("--time-compiled-reference", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.time_compiled_reference:
        return time_compiled_reference(args.time_compiled_reference, args.B, args.T)
    dev, dtype, B, T = "cuda", torch.bfloat16, args.B, args.T
    commit = (
        os.environ.get("ARCHDSL_COMMIT")
        or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    )
    lines = [
        f"# Kernel benchmark: recurrent part, B {B}, T {T}, bf16 inputs (fp32 state)",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- device: {torch.cuda.get_device_name()}",
        f"- torch {torch.__version__}, triton {triton.__version__}, python {platform.python_version()}",
        f"- commit: {commit}",
        f"- command: `python {' '.join(sys.argv)}`",
        "",
    ]
    results = {}
    try:
        f_fwd, f_fb = fla_gdn(B, T, 6, 128, 256, dtype, dev)
        results["fla chunk GDN (6x128, expand_v 2)"] = (f_fwd, f_fb)
        if args.fla_check:
            errs = fla_gradient_check(6, 128, 256, dev)
            lines.append(
                "- fla chunked GDN backward forced on Hopper (triton < 3.7.1): its bf16 gradients vs its "
                "fp32 recurrent kernel at 6x128, V 256, B 4, T 512: "
                + ", ".join(f"{k} {v:.1e}" for k, v in errs.items())
            )
    except Exception as e:  # report and go on: the other rows stay useful
        lines.append(f"- fla GatedDeltaNet failed: {type(e).__name__}: {e}")
        f_fb = None
    if args.e1:
        try:
            fwd, fb, floor, cc = e1_dense(48, T, 1312, dtype, dev)
            lines.append(
                f"- E1 d 1312, B 48, T {T} ({getattr(cc, 'strategy', 'fused loop')}): fwd {fwd:.2f} ms, "
                f"fwd+bwd {fb:.2f} ms; {T} sequential cuBLAS GEMMs [48,1312]x[1312,1312]: {floor:.2f} ms; "
                f"fwd / floor {fwd / floor:.2f}x, fwd+bwd / (2 x floor) {fb / (2 * floor):.2f}x"
            )
        except Exception as e:
            lines.append(f"- E1 d 1312 failed: {type(e).__name__}: {e}")
        print(lines[-1], flush=True)
    sweep_lines = [
        "",
        "## Settings sweep (fwd+bwd ms)",
        "",
        "| shape | tile | warps | C | fwd ms | fwd+bwd ms |",
        "|---|---|---|---|---|---|",
    ]
    check_lines = ["", "## Kernel vs fp32 reference (relative RMS error, first 64 steps)", ""]
    for name, (path, ov) in SHAPES.items():
        try:
            layer = instantiate(parse_file(path), overrides=ov).layer
        except Exception as e:
            lines.append(f"- {name}: {e}")
            continue
        ins, front = cell_inputs(layer, B, T, dtype, dev)
        best = None
        if not args.sweep:
            cc = compile_cell(layer, chunk=16)  # tile and warps measured on the first call
            fwd, fb = time_cell(cc, ins, front, B, T, dtype)
            chosen = cc.chosen.plan
            best = (fwd, fb, chosen.block[chosen.split[-1]], chosen.num_warps, 16)
        tiles = [4, 8, 16, 32] if not args.quick else [8]
        if not args.sweep:
            tiles = []
        for tile in tiles:
            for warps in [1, 2, 4] if not args.quick else [2]:
                for C in [16, 64] if not args.quick else [16]:
                    try:
                        cc = compile_cell(layer, chunk=C, tile=tile, num_warps=warps)
                        fwd, fb = time_cell(cc, ins, front, B, T, dtype)
                    except Exception as e:
                        sweep_lines.append(
                            f"| {name} | {tile} | {warps} | {C} | failed: {type(e).__name__} | |"
                        )
                        continue
                    sweep_lines.append(f"| {name} | {tile} | {warps} | {C} | {fwd:.3f} | {fb:.3f} |")
                    print(sweep_lines[-1], flush=True)
                    if best is None or fb < best[1]:
                        best = (fwd, fb, tile, warps, C)
        if best is None:
            continue
        label = "autotuned" if not args.sweep else "best of sweep"
        results[f"archdsl {name} ({label}: tile {best[2]}, warps {best[3]}, C {best[4]})"] = best[:2]
        cc = compile_cell(layer, chunk=best[4], tile=best[2], num_warps=best[3])
        try:
            errs = check(layer, cc, ins, front, 64)
        except Exception as e:
            errs = {"check failed": float("nan")}
            print(f"check failed: {type(e).__name__}: {e}", flush=True)
        check_lines.append(f"- {name}: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
        # memory of the backward at C = 1, 16, 64
        for C in (1, 16, 64):
            saved, peak = backward_memory(
                compile_cell(layer, chunk=C, tile=best[2], num_warps=best[3]), ins, front
            )
            check_lines.append(
                f"  - C={C}: kept by the forward for the backward {saved / 2**20:.1f} MiB; "
                f"peak extra during the backward {peak / 2**20:.1f} MiB"
            )
        if name == "E88_d12h32":
            lines.append(floor_line(B, T, layer, best, results))
            if args.compiled_reference:
                lines.append(compiled_reference_line(name, B, T, args.compiled_reference))
    lines += [
        "## Times (ms, triton.testing.do_bench median)",
        "",
        "| kernel | fwd | fwd+bwd | fwd+bwd vs fla GDN |",
        "|---|---|---|---|",
    ]
    for k, (a, b) in results.items():
        ratio = f"{b / f_fb:.2f}x" if f_fb else "-"
        lines.append(f"| {k} | {a:.3f} | {b:.3f} | {ratio} |")
    text = "\n".join(lines + check_lines + sweep_lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
