"""Where the host's time goes in an eager layer call: the Python around the kernels.

For each case (a bundled spec at a preset, the Triton backend, bf16 autocast, B x T): the wall time of
one forward+backward (``--calls`` calls, one device sync at the end), the time the host takes to issue
them (the same loop without the sync, after a sync), the GPU time (the profiler's summed kernel time)
and the number of kernels launched; then the same for one decode step (``layer.step`` at batch 1).
With ``--cprofile DIR`` each case's profiles are written there (``<case>-train.txt``,
``<case>-step.txt``: the top Python functions by own time and by cumulative time; ``…-ops.txt``: the
PyTorch operators by host time, with their counts).

A call whose host time is above its GPU time is bound by the host: the GPU waits between kernels.

    python benchmarks/host_time.py --cases gdn e88 mamba2 --cprofile OUT
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer

CASES = {
    "gdn": ("specs/gdn.rnn", "GDN_100m"),
    "e88": ("specs/e88.rnn", "E88_d12h32"),
    "mamba2": ("specs/mamba2.rnn", "Mamba2_100m"),
    "gla": ("specs/gla.rnn", "GLA_100m"),
}


DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def layer_for(case: str) -> RecurrentLayer:
    spec, preset = CASES[case]
    return RecurrentLayer(instantiate(parse_file(spec), preset).layer, backend="triton", seed=0).cuda()


def train_call(layer: RecurrentLayer, B: int, T: int):
    x = torch.randn(B, T, layer.ir.dim, device="cuda", requires_grad=True)
    params = [p for p in layer.parameters() if p.requires_grad]
    dy = torch.randn(B, T, layer.ir.dim, device="cuda")

    def call():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y, _ = layer(x)
        torch.autograd.grad(y, [x, *params], dy.to(y.dtype), allow_unused=True)

    return call


def step_call(layer: RecurrentLayer, dtype=torch.bfloat16):
    layer = layer.to(dtype)
    x = torch.randn(1, layer.ir.dim, device="cuda", dtype=dtype)
    box = {"s": layer.init_state(1)}

    def call():
        with torch.no_grad():
            _, box["s"] = layer.step(x, box["s"])

    return call


def measure(call, n: int, rounds: int = 3) -> dict:
    """Wall ms a call (sync at the end), host ms a call (issue only), each the best of ``rounds``; GPU
    ms a call, kernels a call. Ten calls first: a step's history grows over its first calls (new
    shapes, new kernels compiled) and the first call tunes."""
    for _ in range(10):
        call()
    wall = host = float("inf")
    for _ in range(rounds):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            call()
        host = min(host, (time.perf_counter() - start) / n * 1e3)
        torch.cuda.synchronize()
        wall = min(wall, (time.perf_counter() - start) / n * 1e3)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            call()
        torch.cuda.synchronize()
    events = prof.key_averages()
    gpu = sum(e.self_device_time_total for e in events) / 3 / 1000
    kernels = sum(e.count for e in events if e.self_device_time_total > 0) / 3
    return {"wall": wall, "host": host, "gpu": gpu, "kernels": kernels}


def op_profile(call, path: str) -> None:
    """The PyTorch operators of three calls by their host time (self CPU), with their counts."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            call()
        torch.cuda.synchronize()
    with open(path, "w") as f:
        f.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=70))


def python_profile(call, n: int, path: str) -> None:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        call()
    torch.cuda.synchronize()
    prof.disable()
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    text.write(f"# {n} calls\n")
    stats.sort_stats("tottime").print_stats(45)
    stats.sort_stats("cumulative").print_stats(60)
    with open(path, "w") as f:
        f.write(text.getvalue())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="*", default=["gdn", "e88", "mamba2"], choices=list(CASES))
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=512)
    ap.add_argument("--step-dtype", default="bf16", choices=["bf16", "fp32"], help="the step's weights")
    ap.add_argument("--calls", type=int, default=20, help="timed forward+backward calls (steps: 10x)")
    ap.add_argument("--cprofile", help="write each case's Python and operator profiles into this folder")
    args = ap.parse_args()
    print("| case | call | wall ms | host ms | GPU ms | kernels |")
    print("|---|---|---|---|---|---|")
    for case in args.cases:
        layer = layer_for(case)
        for what, call, n in (
            (f"fwd+bwd B {args.B} T {args.T}", train_call(layer, args.B, args.T), args.calls),
            (f"step B 1 {args.step_dtype}", step_call(layer, DTYPES[args.step_dtype]), 10 * args.calls),
        ):
            m = measure(call, n)
            cells = [case, what, *(f"{m[k]:.3f}" for k in ("wall", "host", "gpu")), f"{m['kernels']:.0f}"]
            print("| " + " | ".join(cells) + " |", flush=True)
            if args.cprofile:
                kind = "step" if what.startswith("step") else "train"
                python_profile(call, n, f"{args.cprofile}/{case}-{kind}.txt")
                op_profile(call, f"{args.cprofile}/{case}-{kind}-ops.txt")


if __name__ == "__main__":
    main()
