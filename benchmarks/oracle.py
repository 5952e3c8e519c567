"""The zoo against the libraries that define its layers: same weights, same input, every gradient.

For each spec of ``oracle_maps.LAYERS``: build the spec's layer (compiled kernels) and the library's,
copy the weights across through the spec's table, and compare the output and every gradient
(the input's and each library parameter's) by relative RMS error, in fp32 and in bf16, at two shapes
(one with T not a multiple of 64). Then time forward + backward of both at the library's 100M
configuration in the same process. Each spec runs in its own ``try``: a failure is recorded with its
message and the next spec runs.

    python benchmarks/oracle.py --out benchmarks/results/oracle [--specs gdn,gla] [--quick]

writes ``results.json`` and ``results.md`` under ``--out``; ``benchmarks/zoo_doc.py`` turns the JSON
into docs/zoo.md. Needs CUDA, flash-linear-attention and mamba_ssm (with a stub for Mamba-1's CUDA
scan when it is missing: its pure-torch reference scan then stands in, and the timing says so).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import oracle_env  # noqa: E402
from kernel_harness import generic_weights  # noqa: E402
from oracle_maps import FP32_MODE, LAYERS, PRECISION, VIEWS  # noqa: E402

from archdsl.lang.checker import instantiate  # noqa: E402
from archdsl.lang.parser import parse_file  # noqa: E402
from archdsl.layer import RecurrentLayer  # noqa: E402

SHAPES = [(2, 128), (2, 100)]  # (B, T); 100 is not a multiple of 64
QUICK_SHAPES = [(1, 64), (1, 37)]
TIME_SHAPE = (8, 512)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: where both layers run ("cpu" only for a smoke test of this script: TRITON_INTERPRET=1, tiny sizes)
DEVICE = "cuda"
#: the sizes agreement is checked at: the 100M preset, or a smaller one under --quick
QUICK_SETS = {
    "gdn": {"dim": 256, "heads": 2, "n": 64},
    "mamba2": {"dim": 256},
    "gla": {"dim": 256, "heads": 2},
    "deltanet": {"dim": 256, "heads": 4, "n": 64},
    "hgrn2": {"dim": 256, "expand": 64},
    "mamba": {"dim": 256},
    "kda": {"dim": 256, "heads": 2, "n": 64},
    "gated_deltaproduct": {"dim": 256, "heads": 2, "n": 64},
    "rwkv6": {"dim": 256, "heads": 2},
    "rwkv7": {"dim": 256, "n": 64, "rank_w": 32, "rank_a": 32, "rank_g": 32},
    "retnet": {"dim": 256, "heads": 2},
}


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def gather(ours: RecurrentLayer, sources: list[str], grad: bool = False) -> torch.Tensor:
    """The spec's tensors of one table row, concatenated along the first dimension (or their grads)."""
    ir, parts = ours.ir, []
    rows = {}
    for k, p in enumerate(ir.projections):
        start = 0
        for name, axes in p.outputs:
            rows[name] = (k, start, start + ir.numel(axes))
            start += ir.numel(axes)
    for src in sources:
        bias = src.startswith("bias:")
        name = src.removeprefix("bias:")
        if src == "out":
            t = ours.out.weight
        elif name in rows:
            k, a, b = rows[name]
            lin = ours.proj[str(k)]
            t = (lin.bias if bias else lin.weight)[a:b]
            if grad:
                g = (lin.bias if bias else lin.weight).grad
                parts.append(g[a:b].reshape(b - a, -1))
                continue
        else:
            t = ours.params[name]
        parts.append((t.grad if grad else t).reshape(t.shape[0] if t.dim() else 1, -1))
    return torch.cat([p.reshape(-1) for p in parts])


def in_spec_order(views: dict | None, name: str, t: torch.Tensor) -> torch.Tensor:
    """A library tensor (or its gradient) viewed in the order of the spec's concatenated tensors."""
    return views[name](t) if views and name in views else t


def copy_weights(ours: RecurrentLayer, lib: torch.nn.Module, rows, views: dict | None = None) -> None:
    named = dict(lib.named_parameters())
    with torch.no_grad():
        for lib_name, sources in rows:
            target = in_spec_order(views, lib_name, named[lib_name])
            value = gather(ours, sources)
            assert value.numel() == target.numel(), (
                f"{lib_name}: {value.numel()} values for {tuple(target.shape)}"
            )
            target.copy_(value.reshape(target.shape))
    covered = {name for name, _ in rows}
    missing = [n for n in named if n not in covered]
    assert not missing, f"library parameters without a row: {missing}"
    n_ours = sum(p.numel() for p in ours.parameters())
    n_lib = sum(p.numel() for p in lib.parameters())
    assert n_ours == n_lib, f"parameter counts differ: spec {n_ours}, library {n_lib}"


def lib_forward(lib, x):
    out = lib(x)
    return out[0] if isinstance(out, tuple) else out


def _grads(model, x, w, rows, spec: str, ours: bool) -> dict:
    """{"y", "dx", "d<library parameter>": tensor} of one forward + backward with output weights ``w``:
    the spec's gradients gathered in each library parameter's order (``ours``), or the library's."""
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y = model(x)[0] if ours else lib_forward(model, x)
    (y.float() * w).sum().backward()
    out = {"y": y.detach().float(), "dx": x.grad}
    named = {} if ours else dict(model.named_parameters())
    for lib_name, sources in rows:
        if ours:
            out["d" + lib_name] = gather(model, sources, grad=True)
        else:
            out["d" + lib_name] = in_spec_order(VIEWS.get(spec), lib_name, named[lib_name].grad).reshape(-1)
    return out


def _errors(a: dict, b: dict) -> dict:
    return {k: rel_rms(a[k].float().reshape(-1), b[k].float().reshape(-1)) for k in b}


def compare(spec: str, ir, ours, lib, rows, B: int, T: int, dtype, truth=None, control=None) -> dict:
    """Relative RMS errors of the spec's layer against the library's, both in ``dtype``; with ``truth``
    (the library in fp32 on the same rounded weights), also each side's distance to it: which side a
    low-precision difference comes from. With ``control`` (the library's layer in another of its
    modes, same weights), also its distance to the library: how far two of the library's own kernels
    are apart at this precision."""
    ours, lib = ours.to(dtype), lib.to(dtype)
    x = torch.randn(B, T, ir.dim, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    w = torch.randn(B, T, ir.dim, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    got_ours = _grads(ours, x, w, rows, spec, True)
    got_lib = _grads(lib, x, w, rows, spec, False)
    errors = _errors(got_ours, got_lib)
    row = {
        "B": B,
        "T": T,
        "dtype": str(dtype).removeprefix("torch."),
        "errors": errors,
        "worst": max(errors, key=errors.get),
        "max": max(errors.values()),
    }
    if truth is not None:
        exact = _grads(truth, x.float(), w, rows, spec, False)
        # the spec's reference interpreter at the same precision: separates the compiled kernels'
        # rounding from the spec's own (its projections' outputs and their gradients in bf16)
        ref = RecurrentLayer(ir, backend="reference", seed=0).to(DEVICE, dtype)
        ref.load_state_dict(ours.state_dict())
        got_ref = _grads(ref, x, w, rows, spec, True)
        for side, got in (("archdsl", got_ours), ("library", got_lib), ("reference", got_ref)):
            e = _errors(got, exact)
            row[f"{side}_vs_fp32"] = {"max": max(e.values()), "worst": max(e, key=e.get), "errors": e}
        # the compiled kernels against their own reference at the same precision: what they round
        e = _errors(got_ours, got_ref)
        row["archdsl_vs_reference"] = {"max": max(e.values()), "worst": max(e, key=e.get), "errors": e}
    if control is not None:
        mode, layer = control
        e = _errors(_grads(layer.to(dtype), x, w, rows, spec, False), got_lib)
        row["library_control"] = {
            "mode": mode,
            "max": max(e.values()),
            "worst": max(e, key=e.get),
            "errors": e,
        }
    return row


def fp32_truth(spec: str, ir, ours, build, rows):
    """The library's layer in fp32 with the spec layer's weights rounded to bf16 (what the bf16 run
    computes with), or None where the library refuses fp32."""
    mode = FP32_MODE.get(spec, "chunk")
    if mode is None:
        return None
    lib = build(ir, mode).to(DEVICE)
    copy_weights(ours, lib, rows, VIEWS.get(spec))
    with torch.no_grad():
        for p in lib.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return lib


def warm_up(model, x) -> None:
    """Three forward + backward passes: compiling and tuning happen here, not in the timed ones."""
    for _ in range(3):
        lib_forward(model, x.requires_grad_(True)).float().sum().backward()
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def time_fb(model, x, reps: int) -> float:
    """Median milliseconds of forward + backward (after ``warm_up``)."""
    times = []
    for _ in range(reps):
        if DEVICE != "cuda":
            t0 = time.perf_counter()
            lib_forward(model, x).float().sum().backward()
            times.append(1e3 * (time.perf_counter() - t0))
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        lib_forward(model, x).float().sum().backward()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def strategy_of(ir) -> str:
    from archdsl.codegen.run.strategies import choose

    from archdsl.autodiff import extract_cell

    return choose(ir, extract_cell(ir)).name


def run_spec(
    spec: str,
    quick: bool,
    timed: bool = True,
    agree: bool = True,
    queue=None,
    dtypes=(torch.float32, torch.bfloat16),
    result: dict | None = None,
    saved=lambda: None,
    control_mode: str | None = None,
) -> dict:
    """``agree``: the agreement rows in ``dtypes``; ``timed``: the times at the 100M shape (``queue``: an
    ``oracle_env.TimeQueue`` that takes turns with other processes on the same GPU). Fills ``result``
    as it goes and calls ``saved`` after each row, so a run cut off by a time limit keeps its rows."""
    library, preset, build, rows = LAYERS[spec]
    path = ROOT / "specs" / f"{spec}.rnn"
    result = {} if result is None else result
    result.update({"spec": spec, "library": library, "preset": preset, "lines": _lines(path)})
    result["precision"] = PRECISION.get(spec)
    products = os.environ.get("TRITON_F32_DEFAULT")
    if products in ("ieee", "tf32x3") and result["precision"]:  # --tf32-off
        kept = [p for p in result["precision"].split("; ") if "TF32" not in p]
        off = "TF32 off in the libraries' kernels" + (" (3×TF32 products)" if products == "tf32x3" else "")
        result["precision"] = "; ".join([off, *kept])
    ir = instantiate(parse_file(path), preset, QUICK_SETS[spec] if quick else {}).layer
    result["strategy"] = strategy_of(ir)
    if agree:
        result["agreement"] = []
        agreement(spec, ir, build, rows, quick, result, dtypes, saved, control_mode)
    if timed:  # agreement only (several specs share a GPU: their times would not be comparable)
        result["time"] = timing(spec, path, preset, build, rows, quick, queue)
    return result


def agreement(
    spec: str, ir, build, rows, quick: bool, result: dict, dtypes, saved, control_mode=None
) -> None:
    """Appends one row per dtype and shape to ``result["agreement"]``, calling ``saved`` after each;
    ``control_mode``: the bf16 rows also compare the library with itself in that mode."""
    out = result["agreement"]
    for dtype in dtypes:
        mode = FP32_MODE.get(spec, "chunk") if dtype == torch.float32 else "chunk"
        if mode is None:
            result["fp32_skipped"] = "the library's layer refuses fp32 under autograd (bf16 only)"
            continue
        for B, T in QUICK_SHAPES if quick else SHAPES:
            start = time.time()
            torch.manual_seed(0)
            # a matrix at zero (rwkv7's output map, as fla's) would leave the gradients behind it at 0
            ours = generic_weights(RecurrentLayer(ir, backend="triton", seed=0)).to(DEVICE)
            lib = build(ir, mode).to(DEVICE)
            copy_weights(ours, lib, rows, VIEWS.get(spec))
            truth = fp32_truth(spec, ir, ours, build, rows) if dtype == torch.bfloat16 else None
            control = None
            if control_mode and dtype == torch.bfloat16:
                control = (control_mode, build(ir, control_mode).to(DEVICE))
                copy_weights(ours, control[1], rows, VIEWS.get(spec))
            out.append(compare(spec, ir, ours, lib, rows, B, T, dtype, truth, control))
            saved()
            # a progress line: a run cut off by a timeout still says how far it got and how long each took
            print(
                f"{spec}: {str(dtype)[6:]} B {B} T {T} built and compared in {time.time() - start:.0f} s",
                file=sys.stderr,
                flush=True,
            )


def timing(spec: str, path: Path, preset: str, build, rows, quick: bool, queue=None) -> dict:
    """Forward + backward of both layers at the library's 100M configuration, bf16: warmed up (compiled
    and tuned) first, then, with a ``queue``, timed alone on the GPU once the other processes are warm."""
    full = instantiate(parse_file(path), preset, QUICK_SETS[spec] if quick else {}).layer
    ours = generic_weights(RecurrentLayer(full, backend="triton", seed=0)).to(DEVICE, torch.bfloat16)
    lib = build(full).to(DEVICE, torch.bfloat16)
    copy_weights(ours, lib, rows, VIEWS.get(spec))
    B, T = (2, 128) if quick else TIME_SHAPE
    x = torch.randn(B, T, full.dim, device=DEVICE, dtype=torch.bfloat16)
    reps = 3 if quick else 20
    t0 = time.time()
    warm_up(ours, x.clone())
    warm_up(lib, x.clone())
    out = {"B": B, "T": T, "dtype": "bfloat16", "preset": preset, "warm_up_s": round(time.time() - t0, 1)}
    with queue.turn(spec) if queue else contextlib.nullcontext():
        out["archdsl_ms"] = time_fb(ours, x.clone(), reps)
        out["library_ms"] = time_fb(lib, x.clone(), reps)
    out["ratio"] = out["archdsl_ms"] / out["library_ms"]
    if spec == "mamba" and not hasattr(sys.modules.get("selective_scan_cuda"), "fwd"):
        out["note"] = "the library without its CUDA scan: mamba_ssm's pure-torch reference scan"
    return out


def _lines(path: Path) -> int:
    """Lines of the spec that say something: not blank, not only a comment."""
    return sum(
        1 for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")
    )


def prepare_libraries() -> None:
    """Settings the libraries need on this machine, before their first call."""
    try:
        import fla.ops.common.chunk_o as chunk_o

        chunk_o.TRITON_ABOVE_3_7_1 = True  # GatedDeltaNet's backward on Hopper
    except Exception:  # the library is absent: the specs that need it fail with their own message
        pass
    try:
        from oracle_maps import _mamba

        _mamba("mamba_simple", "Mamba")
        if not hasattr(sys.modules["selective_scan_cuda"], "fwd"):  # the stub: no CUDA scan
            from mamba_ssm.ops.selective_scan_interface import selective_scan_ref

            sys.modules["mamba_ssm.modules.mamba_simple"].selective_scan_fn = selective_scan_ref
    except Exception:
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="directory for results.json and results.md")
    ap.add_argument("--specs", default=",".join(LAYERS), help="comma-separated specs (default: all)")
    ap.add_argument("--quick", action="store_true", help="small sizes and shapes, few timing repetitions")
    ap.add_argument("--no-time", action="store_true", help="agreement only: no timing at the 100M shape")
    ap.add_argument(
        "--tf32-off",
        nargs="?",
        const="ieee",
        choices=["ieee", "tf32x3"],
        help="the libraries' fp32 products exact (ieee, the default) or fp32-accurate on tensor cores "
        "(tf32x3: compiles in seconds where ieee takes minutes) before any kernel compiles: shows "
        "whether an fp32 difference is their TF32",
    )
    ap.add_argument(
        "--first-config",
        action="store_true",
        help="fla's autotuners keep their first configuration (agreement only: cold compiles "
        "of every candidate take minutes)",
    )
    ap.add_argument("--time-only", action="store_true", help="timing only: no agreement rows")
    ap.add_argument(
        "--dtypes",
        default="fp32,bf16",
        help="the agreement rows' precisions, comma-separated from fp32, bf16 (default both; "
        "--tf32-off concerns the fp32 rows alone)",
    )
    ap.add_argument(
        "--control",
        metavar="MODE",
        help="each bf16 row also compares the library with its own layer in MODE (e.g. fused_recurrent): "
        "how far two of the library's kernels are apart in bf16",
    )
    ap.add_argument(
        "--trace-every",
        type=float,
        metavar="SECONDS",
        help="print every thread's Python stack to stderr every SECONDS (where a long run spends its time)",
    )
    ap.add_argument(
        "--time-queue",
        type=Path,
        help="a folder shared by processes on one GPU: each times alone, once --time-peers are warm",
    )
    ap.add_argument("--time-peers", type=int, default=1, help="processes sharing --time-queue")
    ap.add_argument(
        "--time-wait", type=float, default=300.0, help="seconds to wait for the peers before timing anyway"
    )
    args = ap.parse_args(argv)
    if args.first_config and not args.no_time:
        print("error: --first-config: only with --no-time (untuned libraries are not timed)", file=sys.stderr)
        return 2
    if args.time_only and args.no_time:
        print("error: --time-only and --no-time leave nothing to run", file=sys.stderr)
        return 2
    dtypes = [DTYPES.get(d) for d in args.dtypes.split(",") if d]
    if not dtypes or None in dtypes:
        expected = ", ".join(DTYPES)
        print(f"error: --dtypes: expected names from {expected}; found '{args.dtypes}'", file=sys.stderr)
        return 2
    if args.trace_every:
        faulthandler.dump_traceback_later(args.trace_every, repeat=True, file=sys.stderr)
    if args.first_config:
        oracle_env.first_config(("fla.",))
    tf32_constants = oracle_env.tf32_off(args.tf32_off) if args.tf32_off else []
    specs = [s for s in args.specs.split(",") if s]
    unknown = [s for s in specs if s not in LAYERS]
    if unknown:
        print(f"error: --specs: unknown {', '.join(unknown)}; known: {', '.join(LAYERS)}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: the oracle needs a CUDA device", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    prepare_libraries()
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python", "benchmarks/oracle.py", *(argv or sys.argv[1:])]),
        "tf32_off": args.tf32_off,
        "tf32_constants_off": tf32_constants,
        "first_config": args.first_config,
        "dtypes": args.dtypes,
    }
    queue = None
    if args.time_queue:
        queue = oracle_env.TimeQueue(args.time_queue, args.time_peers, time.time() + args.time_wait)
    for name in ("fla", "mamba_ssm", "triton"):
        try:
            meta[name] = __import__(name).__version__
        except Exception:
            meta[name] = None
    results = []

    def save() -> None:  # after every row and spec: a run cut off by a time limit keeps what it has
        doc = {"meta": meta, "results": results}
        (args.out / "results.json").write_text(json.dumps(doc, indent=1))
        (args.out / "results.md").write_text(markdown(doc))

    for spec in specs:
        t0 = time.time()
        results.append({"spec": spec, "library": LAYERS[spec][0]})
        try:
            run_spec(
                spec,
                args.quick,
                not args.no_time,
                not args.time_only,
                queue,
                dtypes,
                results[-1],
                save,
                args.control,
            )
        except Exception as e:  # recorded, and the next spec runs
            results[-1].update({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        results[-1]["seconds"] = round(time.time() - t0, 1)
        print(json.dumps({k: v for k, v in results[-1].items() if k != "traceback"})[:400], flush=True)
        save()
    return 0 if all("error" not in r for r in results) else 1


def markdown(doc: dict) -> str:
    meta = doc["meta"]
    out = [
        f"# Oracle: the zoo against its libraries ({meta['device']}, {meta['date']})",
        "",
        f"`{meta['command']}`; torch {meta['torch']}, fla {meta.get('fla')}, "
        f"mamba_ssm {meta.get('mamba_ssm')}.",
        "",
        "| spec | library | dtype | B×T | max rel-RMS | worst tensor | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        if "error" in r:
            out.append(f"| {r['spec']} | {r['library']} | | | failed | | {r['error'][:200]} |")
            continue
        for a in r.get("agreement", []):
            note = r["precision"] or "" if a["dtype"] == "float32" else ""
            if "archdsl_vs_fp32" in a:
                ours, lib = a["archdsl_vs_fp32"], a["library_vs_fp32"]
                note = (
                    f"to the library in fp32: archdsl {ours['max']:.2e} ({ours['worst']}), "
                    f"library {lib['max']:.2e} ({lib['worst']})"
                )
            if "archdsl_vs_reference" in a:
                k = a["archdsl_vs_reference"]
                note += f"; archdsl to its reference in bf16: {k['max']:.2e} ({k['worst']})"
            if "library_control" in a:
                c = a["library_control"]
                note += f"; the library's {c['mode']} layer to its own: {c['max']:.2e} ({c['worst']})"
            out.append(
                f"| {r['spec']} | {r['library']} | {a['dtype']} | {a['B']}×{a['T']} | {a['max']:.2e} | "
                f"{a['worst']} | {note} |"
            )
    out += [
        "",
        "| spec | strategy | B×T (bf16) | archdsl ms | library ms | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        if "time" in r:
            t = r["time"]
            out.append(
                f"| {r['spec']} | {r['strategy']} | {t['B']}×{t['T']} | {t['archdsl_ms']:.2f} | "
                f"{t['library_ms']:.2f} | {t['ratio']:.2f} |"
            )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
