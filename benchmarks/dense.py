"""The persistent dense strategy on a GPU: E1 at d 1312 (B 48, T 512, bf16) forward and
forward+backward of the compiled cell against the floor of T sequential cuBLAS GEMMs
[48, 1312] x [1312, 1312]; the kernels against the fp32 reference first (small shapes, then the
first 64 steps of the benchmark shape). Prints Markdown; run on a GPU:

    python benchmarks/dense.py --out benchmarks/results/dense-h100.md

A watchdog ends the process if one phase hangs (a grid barrier that never releases), so a broken
kernel costs its timeout, not the device budget.
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import os
import platform
import sys
import time

import torch
import triton
from triton.testing import do_bench

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from archdsl.codegen import build_cell  # noqa: E402
from archdsl.codegen.run.persistent import PersistentCell, build_persistent  # noqa: E402
from archdsl.specs import __file__ as _specs_init  # noqa: E402
from cell_bench import cell_inputs, check, gemm_floor  # noqa: E402

from archdsl.autodiff import extract_cell  # noqa: E402
from archdsl.lang.checker import instantiate  # noqa: E402
from archdsl.lang.parser import parse_file  # noqa: E402

SPECS = os.path.dirname(_specs_init)
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def layer_of(name: str, d: int):
    return instantiate(
        parse_file(os.path.join(SPECS, f"{name}.rnn")), overrides={"dim": d, "expansion": 1}
    ).layer


def persistent(layer, cfg: str) -> PersistentCell:
    """``rows x warps x k`` (``-late``: the step's own loads after the grid barrier)."""
    rows, warps, block_k = (int(v) for v in cfg.removesuffix("-late").split("x"))
    cc = build_persistent(layer, extract_cell(layer), rows, warps, block_k, early=not cfg.endswith("-late"))
    assert cc is not None, f"{layer.name}: the persistent strategy does not apply"
    return cc


def timed(fn, ins, front):
    """fwd and fwd+bwd (gradients of every input and of the matrices) in ms."""
    ins_g = {k: v.clone().requires_grad_(True) for k, v in ins.items()}
    front_g = {k: v.clone().requires_grad_(True) for k, v in front.items()}
    y = fn(ins_g, front_g)[0]
    dy = torch.randn_like(y)

    def fwd():
        return fn(ins_g, front_g)[0]

    def fwdbwd():
        y = fn(ins_g, front_g)[0]
        torch.autograd.grad(y, [*ins_g.values(), *front_g.values()], dy, allow_unused=True)

    fwdbwd()
    torch.cuda.synchronize()
    return do_bench(fwd, warmup=5, rep=60), do_bench(fwdbwd, warmup=5, rep=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--B", type=int, default=48)
    ap.add_argument("--T", type=int, default=512)
    ap.add_argument("--d", type=int, default=1312)
    ap.add_argument(
        "--configs",
        default="default,16x8x128-late,16x4x128,32x8x128",
        help="rows x warps x k block to time ('default': the plan build_cell picks; '-late': the step's "
        "own loads after the grid barrier)",
    )
    ap.add_argument("--batches", default="128", help="further batch sizes timed with the default plan")
    ap.add_argument("--watchdog", type=float, default=60.0, help="seconds one phase may take")
    ap.add_argument("--deadline", type=float, default=200.0, help="skip further configs after this")
    ap.add_argument("--device", default="cuda", help="cpu: only the checks, in Triton's interpreter")
    ap.add_argument("--out")
    args = ap.parse_args()
    t_start = time.time()
    dev, dtype, B, T, d = args.device, torch.bfloat16, args.B, args.T, args.d
    gpu = torch.cuda.get_device_name() if dev == "cuda" else "cpu (interpreter)"
    sms = torch.cuda.get_device_properties(0).multi_processor_count if dev == "cuda" else 0
    lines = [
        f"# Persistent dense strategy: E1 at d {d}, B {B}, T {T}, bf16 inputs (fp32 state)",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- device: {gpu} ({sms} SMs)",
        f"- torch {torch.__version__}, triton {triton.__version__}, python {platform.python_version()}",
        f"- commit: {os.environ.get('ARCHDSL_COMMIT', 'unknown')}",
        f"- command: `python benchmarks/dense.py {' '.join(sys.argv[1:])}`",
        "",
    ]

    def say(line=""):
        lines.append(line)
        print(line, flush=True)

    for line in lines:
        print(line, flush=True)

    def phase(name):
        faulthandler.cancel_dump_traceback_later()
        faulthandler.dump_traceback_later(args.watchdog, exit=True)
        print(f"[{time.time() - t_start:6.1f}s] {name}", file=sys.stderr, flush=True)

    # 1) correctness where the grid really runs persistently (several programs, one launch)
    say("## Kernel vs fp32 reference (relative RMS error)")
    say()
    ok = True
    for name, dd, dt, b, t in (
        ("e1", 80, torch.float32, 3, 17),
        ("e1", 80, torch.bfloat16, 3, 17),
        ("e1", 67, torch.float32, 130, 5),  # two batch blocks of 128, a partial row tile
        ("lstm", 80, torch.float32, 3, 9),
        ("e10", 80, torch.float32, 3, 9),
        ("gru", 80, torch.float32, 3, 9),
    ):
        phase(f"check {name} d {dd} {dt}")
        layer = layer_of(name, dd)
        cc = build_cell(layer, 16, None, None)
        assert isinstance(cc, PersistentCell)
        ins, front = cell_inputs(layer, b, t, dt, dev)
        errs = check(layer, cc, ins, front, t)
        cc.check_barriers()
        worst = max(errs.values())
        ok &= worst <= TOL[dt]
        say(
            f"- {name} d {dd}, B {b}, T {t}, {str(dt)[6:]} ({cc.plan.programs(b)} programs, persistent "
            f"{bool(cc.last_sync)}): worst {worst:.1e} {'ok' if worst <= TOL[dt] else 'FAIL'}; "
            + ", ".join(f"{k} {v:.1e}" for k, v in errs.items())
        )

    layer = layer_of("e1", d)
    ins, front = cell_inputs(layer, B, T, dtype, dev)
    default = build_cell(layer, 16, None, None)
    phase("check benchmark shape")
    errs = check(layer, default, ins, front, 64)
    default.check_barriers()
    say(
        f"- E1 d {d}, B {B}, first 64 steps, bf16 (default plan: {default.plan.rows} rows x "
        f"{default.plan.num_warps} warps): " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items())
    )
    say()
    if dev != "cuda":
        print("\n".join(lines))
        return

    # 2) the floor: T sequential GEMMs of the recurrence's shape
    phase("floor")
    floor = gemm_floor(B, T, d, dtype, dev, rep=60)
    say("## Times (ms, triton.testing.do_bench median)")
    say()
    say(f"- floor: {T} sequential cuBLAS GEMMs [{B},{d}]x[{d},{d}] bf16: {floor:.2f} ms")
    say()
    say("| plan | rows/program | warps | k block | programs | fwd ms | fwd+bwd ms | fwd+bwd / floor |")
    say("|---|---|---|---|---|---|---|---|")
    best = None
    for cfg in args.configs.split(","):
        if time.time() - t_start > args.deadline:
            say(f"| {cfg} | skipped: deadline | | | | | | |")
            continue
        phase(f"time {cfg}")
        try:
            cc = default if cfg == "default" else persistent(layer, cfg)
            f, fb = timed(cc, ins, front)
            cc.check_barriers()
        except Exception as e:  # report and go on
            say(f"| {cfg} | failed: {type(e).__name__}: {str(e)[:120]} | | | | | | |")
            continue
        p = cc.plan
        say(
            f"| {cfg} | {p.rows} | {p.num_warps} | {p.blocks(B)[1]} | {p.programs(B)} | {f:.2f} | {fb:.2f} "
            f"| {fb / floor:.2f}x |"
        )
        if best is None or fb < best[1]:
            best = (f, fb, cfg)
    say()
    phase("memory")
    ins_g = {k: v.clone().requires_grad_(True) for k, v in ins.items()}
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    y = default(ins_g, front)[0]
    torch.autograd.grad(y, list(ins_g.values()), torch.ones_like(y), allow_unused=True)
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    say(f"- default plan, peak extra memory of forward + backward at B {B}, T {T}: {peak:.0f} MiB")
    for b in (int(v) for v in args.batches.split(",") if v):
        if time.time() - t_start > args.deadline:
            break
        phase(f"batch {b}")
        ins_b, front_b = cell_inputs(layer, b, T, dtype, dev)
        f, fb = timed(default, ins_b, front_b)
        default.check_barriers()
        bb, bk, n = default.plan.blocks(b)
        say(
            f"- default plan at B {b} ({n} programs of {bb} batch rows, k block {bk}, "
            f"persistent {bool(default.last_sync)}): fwd {f:.2f} ms, fwd+bwd {fb:.2f} ms"
        )
    faulthandler.cancel_dump_traceback_later()
    say()
    if best:
        say(
            f"Best: {best[2]}: fwd {best[0]:.2f} ms ({best[0] / T * 1e3:.1f} us/step), "
            f"fwd+bwd {best[1]:.2f} ms = {best[1] / floor:.2f}x the floor ({floor:.2f} ms); target 1.5x."
        )
    say(f"Reference checks {'all within tolerance' if ok else 'FAILED'}.")
    text = "\n".join(lines) + "\n"
    outs = [args.out, os.path.join(os.environ["OUT"], "dense.md") if os.environ.get("OUT") else None]
    for path in filter(None, outs):
        with open(path, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
