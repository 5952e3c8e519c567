"""The chunked strategy's generated per-token kernels alone (codegen/emit/token.py: the coefficients
before the chunked op, ``token``, and ``g ⊙ o + p`` with the readout after it, ``readout``; forward and
backward each) over tokens per program (their ``CHUNK``) × warps, at the layers' shapes: bf16 inputs
as the layer passes them, fp32 parameters, the chunked op's ``o`` in the type the layer gives it
(``chunked_common.o_dtype``: bf16 where the decay is per key channel), the cotangents of the fp32
outputs in fp32.

Each row: the launcher's time per call (``triton.testing.do_bench``, ms; the launcher's allocations and
its sum of the parameters' per-program partial gradients included), the bytes the call moves (every
tensor it reads or writes counted once, the per-program partial sums written and read back) and the
GB/s that gives, and the largest difference of its results from the default setting's
(``TOKEN_LAUNCH``), in units of the largest default result: a setting that computes something else
shows here, not as a fast time. On the GPU (every setting is a compile of each kernel: a spec at a
time keeps a call within minutes; the table is rewritten after each kernel, so a run cut off keeps
what it measured):

    python benchmarks/token_sweep.py --specs mamba2 --out token-sweep-mamba2.md

On the CPU (the Triton interpreter, tiny shapes, one setting; timed with a clock, one call):

    TRITON_INTERPRET=1 python benchmarks/token_sweep.py --preset test
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import subprocess
import sys
import time

import torch
import triton
from archdsl.codegen.run.chunked import build_chunked
from archdsl.codegen.run.chunked_common import interpreted, o_dtype
from triton.testing import do_bench

from archdsl.api import layer_ir

SPECS = {"gdn": "GDN_100m", "mamba2": "Mamba2_100m", "gla": "GLA_100m"}
#: the interpreter's preset: each spec's ``test`` shapes, a tiny batch, one setting
TEST = {"B": 1, "T": 5, "tokens": [4], "warps": [1]}
KINDS = ("token", "readout")


def shape(part, axes, lead=()) -> tuple[int, ...]:
    return (*lead, *(part.sizes[a] for a in axes))


def operands(part, B: int, T: int, dev: str, o_type: torch.dtype, seed: int = 0):
    """(inputs, parameters, cotangents of the outputs) as the cell hands them to the launchers."""
    g = torch.Generator(device=dev).manual_seed(seed)

    def randn(size, dtype):
        return (0.5 * torch.randn(size, device=dev, generator=g)).to(dtype)

    xs = [
        randn(shape(part, ax, (B, T)), dtype=o_type if n == "o:" else torch.bfloat16)
        for n, ax in part.inputs.items()
    ]
    cs = [randn(shape(part, ax), dtype=torch.float32) for ax in part.consts.values()]
    dys = [randn(shape(part, part.output_axes(o), (B, T)), dtype=torch.float32) for o in part.outputs]
    return xs, cs, dys


def nbytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


def moved(part, args: list, results: list, direction: str, B: int, T: int, tokens: int) -> int:
    """Bytes a call reads and writes: its arguments and results once each; a backward also writes every
    program's partial gradient of each parameter (fp32), which the launcher's sum reads back."""
    out = nbytes(args) + nbytes(results)
    if direction == "bwd":
        programs = B * math.ceil(T / tokens)
        out += sum(2 * 4 * programs * math.prod(shape(part, ax)) for ax in part.consts.values())
    return out


def largest_diff(got: list, want: list) -> float:
    scale = max(w.abs().max().item() for w in want) or 1.0
    return max((a.float() - b.float()).abs().max().item() for a, b in zip(got, want)) / scale


def timed(fn, cuda: bool) -> float:
    """ms per call: do_bench on a GPU; on the CPU one call by the clock."""
    if cuda:
        return do_bench(fn, warmup=5, rep=25)
    start = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - start)


def kernel_rows(spec: str, kind: str, pp, B: int, T: int, opts, cuda: bool, o_type) -> list[list]:
    """The rows of one part's forward and backward launchers over the settings; ``o_type``: the
    chunked op's output type in a bf16 layer of this spec (``o_dtype``)."""
    dev = "cuda" if cuda else "cpu"
    xs, cs, dys = operands(pp.part, B, T, dev, o_type)
    rows = []
    for direction in opts.direction:
        launch = getattr(pp.module, f"{pp.stem}_{kind}_{direction}")
        args = [*xs, *cs] + (dys if direction == "bwd" else [])

        def call(tokens, warps, launch=launch, args=args):
            out = launch(*args, chunk=tokens, num_warps=warps)
            return list(out) if isinstance(out, tuple) else [out]

        want = call(pp.plan.chunk, pp.plan.num_warps)
        for tokens in opts.tokens:
            for warps in opts.warps:
                label = [spec, f"{kind} {direction}", tokens, warps]
                try:
                    got = call(tokens, warps)
                    ms = timed(lambda t=tokens, w=warps: call(t, w), cuda)
                except Exception as e:  # a setting Triton cannot compile is a row, not the end of the sweep
                    rows.append([*label, f"failed: {type(e).__name__}: {str(e)[:80]}", "", "", ""])
                    continue
                mb = moved(pp.part, args, got, direction, B, T, tokens) / 1e6
                diff = largest_diff(got, want)
                rows.append([*label, f"{ms:.4f}", f"{mb:.4g}", f"{mb / ms:.0f}", f"{diff:.1e}"])
                print("| " + " | ".join(map(str, rows[-1])) + " |", file=sys.stderr, flush=True)
    return rows


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", nargs="*", default=list(SPECS), choices=list(SPECS))
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=512)
    ap.add_argument("--tokens", type=int, nargs="*", default=[1, 2, 4, 8, 16, 32], help="tokens per program")
    ap.add_argument("--warps", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--direction", nargs="*", default=["fwd", "bwd"], choices=["fwd", "bwd"])
    ap.add_argument("--kinds", nargs="*", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--preset", choices=["100m", "test"], default="100m", help="test: the interpreter's")
    ap.add_argument("--out", default="", help="also write the table here")
    ap.add_argument("--commit", default="", help="the archdsl commit measured (default: git's HEAD)")
    opts = ap.parse_args(argv)
    bad = [f"--tokens {n}" for n in opts.tokens if n < 1] + [
        f"--warps {n}" for n in opts.warps if n < 1 or n & (n - 1)
    ]
    if bad:
        ap.error(f"expected tokens >= 1 and warps a power of two, found {', '.join(bad)}")
    if opts.preset == "test":
        opts.B, opts.T, opts.tokens, opts.warps = TEST["B"], TEST["T"], TEST["tokens"], TEST["warps"]
    return opts


def header(opts, cuda: bool, argv: list[str]) -> list[str]:
    commit = (
        opts.commit
        or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    )
    device = torch.cuda.get_device_name() if cuda else "CPU (Triton interpreter)"
    return [
        f"# The per-token kernels over tokens per program × warps (B {opts.B}, T {opts.T}, bf16 inputs, "
        "o as a bf16 layer gives it: bf16 where the decay is per key channel, else fp32)",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {device}, torch "
        f"{torch.__version__}, triton {triton.__version__}, python {platform.python_version()}, "
        f"commit {commit or '?'}",
        "",
        "`python benchmarks/token_sweep.py " + " ".join(argv) + "`",
        "",
        "ms: per call (do_bench; on the CPU one call by the clock); MB: bytes read and written per call; "
        "GB/s: MB / ms; diff: the largest difference of the results from the default setting's, "
        "over the largest default result.",
        "",
        "| spec | kernel | tokens | warps | ms | MB | GB/s | diff |",
        "|---|---|---|---|---|---|---|---|",
    ]


def main(argv=None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    opts = parse(argv)
    cuda = torch.cuda.is_available()
    if not (cuda or interpreted()):
        sys.exit("error: no GPU: run on CUDA, or on the CPU with TRITON_INTERPRET=1 and --preset test")
    lines = header(opts, cuda, argv)
    for spec in opts.specs:
        cell = build_chunked(layer_ir(spec, "test" if opts.preset == "test" else SPECS[spec]))
        for kind in opts.kinds:
            if kind in cell.kernels:
                o_type = o_dtype(torch.bfloat16, cell.forms[0].scalar_decay)
                rows = kernel_rows(spec, kind, cell.kernels[kind], opts.B, opts.T, opts, cuda, o_type)
                lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
                write(opts.out, lines)  # after each kernel: a run cut off keeps what it measured
    text = write(opts.out, lines)
    print(text)
    return text


def write(path: str, lines: list[str]) -> str:
    text = "\n".join(lines) + "\n"
    if path:
        with open(path, "w") as f:
            f.write(text)
    return text


if __name__ == "__main__":
    main()
