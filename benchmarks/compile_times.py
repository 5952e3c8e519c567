"""Cold and cached compile time of every spec at its 100M shape (issue #10: ≤ 30 s cold, ≤ 1 s cached).

For each spec, a fresh process solves the width for ``--params`` (as ``archdsl train --params``
does), builds one layer with the Triton backend and times its first forward + backward on a
``B × T`` bf16 batch: generating the module, Triton's compilation and the autotuning of launch plans.
A second fresh process with the same caches times the cached first call. Each phase's start is
printed by the child, so a spec that runs past ``--timeout`` is reported with the phase it was in.

    python benchmarks/compile_times.py --out benchmarks/results/compile-times [--specs e88,gdn]
        [--lanes 4] [--timeout 240] [--profile]

``--lanes N`` runs N specs at once, lane i on GPU ``i % torch.cuda.device_count()``; every lane has
its own Triton and archdsl caches, so no lane reuses another's compilation. A spec in ``--specs`` may
carry settings, ``deltanet:heads=9``: hypers set before the width is solved (the row is named
``deltanet heads=9``), ``dim=D`` a width taken as it is instead of solved for ``--params``; a spec
may be listed more than once with different settings.

Before the first child, the bytecode of the installed archdsl and Triton is written (``compileall``),
as a plain ``pip install`` does. After an install with ``--no-compile`` the cached first calls of
``results/compile-times/cached-profile-2026-11-27`` still compiled archdsl's sources (0.26–0.35 s):
the cold process before them had written no bytecode either (Python writes none under
``PYTHONDONTWRITEBYTECODE`` or into a folder it cannot write).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import dataclasses, json, sys, time
t_start = time.perf_counter()
def phase(name):
    print(f"phase {name} {time.perf_counter() - t_start:.1f}", file=sys.stderr, flush=True)
phase("import")
import torch
from archdsl.lm.budget import solve, spec_layer
from archdsl.lm.model import ModelConfig
from archdsl.layer import RecurrentLayer
spec, params, strategy, dev = sys.argv[1], sys.argv[2], sys.argv[5], sys.argv[6]
B, T = int(sys.argv[3]), int(sys.argv[4])
phase("solve")
sets = json.loads(sys.argv[7])
dim = sets.pop("dim", None)
cfg0 = ModelConfig(model=spec, backend="triton", sets=sets)
cfg = solve(cfg0, params, cfg0.tolerance) if dim is None else dataclasses.replace(cfg0, dim=int(dim))
ir = spec_layer(cfg)
phase("build")
layer = RecurrentLayer(ir, backend="triton", **({"strategy": strategy} if strategy != "auto" else {}))
layer = layer.to(dev)
x = torch.randn(B, T, ir.dim, device=dev, requires_grad=True)
def step():
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
        y = layer(x)[0]
    y.float().sum().backward()
    if dev == "cuda":
        torch.cuda.synchronize()
# CUDA's context, cuBLAS and autograd's threads start on a plain layer first: not archdsl's time
warm = torch.nn.Linear(ir.dim, ir.dim).to(dev)
with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
    warm(x).float().sum().backward()
x.grad = None
phase("first call")
profile = sys.argv[8] if len(sys.argv) > 8 else ""
if profile:  # where the cached first call's time goes: the 40 costliest functions, cumulative
    import cProfile, io, pstats
    prof = cProfile.Profile()
    prof.enable()
t0 = time.perf_counter()
step()
first = time.perf_counter() - t0
if profile:
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(40)
    open(profile, "w").write(text.getvalue())
phase("second call")
t0 = time.perf_counter()
step()
second = time.perf_counter() - t0
print(json.dumps({"dim": ir.dim, "first_s": first, "second_s": second,
                  "total_s": time.perf_counter() - t_start,
                  "strategy": getattr(layer._cell, "strategy", None)
                  or getattr(getattr(layer._cell, "strategy_entry", None), "name", "?"),
                  "config": cfg.sets}), flush=True)
"""


def run_child(spec: str, args, env: dict, profile: str = "") -> dict:
    sizes = [str(args.batch), str(args.seq)]
    name, sets = parse_row(spec)
    cmd = [
        sys.executable,
        "-c",
        CHILD,
        name,
        args.params,
        *sizes,
        args.strategy,
        args.device,
        json.dumps(sets),
    ]
    cmd.append(profile)
    start = time.perf_counter()
    try:
        p = subprocess.run(
            cmd, env=env, cwd=env["ARCHDSL_CACHE"], capture_output=True, text=True, timeout=args.timeout
        )
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        phases = [ln for ln in err.splitlines() if ln.startswith("phase ") or "archdsl:" in ln]
        return {"error": f"timeout after {args.timeout} s; last: {phases[-1] if phases else '-'}"}
    wall = time.perf_counter() - start
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        log = args.out / f"failed-{name.replace(' ', '-')}.log"  # the whole of it: which kernel, which line
        log.write_text(f"$ {' '.join(cmd[:2])} <child> {' '.join(cmd[3:])}\n{p.stdout}\n{p.stderr}")
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {p.returncode}: {' | '.join(tail)}"[:400] + f" (whole log: {log.name})"}
    out = json.loads(lines[-1])
    out["wall_s"] = wall
    return out


def _lane_device(lane: int, count: int) -> str:
    """The GPU of a lane among those this process sees: an id from its own CUDA_VISIBLE_DEVICES where
    that is set (a child given "0" would see the machine's first GPU, not this process's)."""
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    ids = visible or [str(i) for i in range(max(1, count))]
    return ids[lane % len(ids)]


def one_spec(spec: str, lane: int, args) -> dict:
    import torch

    root = Path(tempfile.mkdtemp(prefix=f"ct-{spec.replace(' ', '-').replace('=', '')}-"))
    env = dict(os.environ)
    env.update(
        TRITON_CACHE_DIR=str(root / "triton"),
        ARCHDSL_CACHE=str(root / "archdsl"),
        CUDA_VISIBLE_DEVICES=_lane_device(lane, torch.cuda.device_count()),
        PYTHONUNBUFFERED="1",
        ARCHDSL_PROGRESS="1",  # the phase a timed-out child was in
    )
    # the child runs outside the checkout, so that an installed archdsl is not shadowed by its sources
    Path(env["ARCHDSL_CACHE"]).mkdir(parents=True)
    cold = run_child(spec, args, env)
    profile = str((args.out / f"profile-{spec.replace(' ', '-')}.txt").resolve()) if args.profile else ""
    cached = run_child(spec, args, env, profile) if "error" not in cold else {"error": "skipped"}
    row = {"spec": spec, "cold": cold, "cached": cached}
    print(json.dumps(row), flush=True)
    with open(args.out / "rows.jsonl", "a") as f:  # kept if the run is cut off
        f.write(json.dumps(row) + "\n")
    return row


def parse_row(spec: str) -> tuple[str, dict]:
    """A row's name (``deltanet heads=9``) -> (the spec, its settings)."""
    name, *sets = spec.split(" ")
    return name, dict(kv.split("=", 1) for kv in sets)


def rows_of(specs: list[str]) -> list[str]:
    """``--specs`` items (``deltanet:heads=9:dim=1152``) -> row names (``deltanet heads=9 dim=1152``)."""
    out = []
    for item in specs:
        name, *sets = item.split(":")
        if any("=" not in kv for kv in sets):
            print(
                f"error: --specs {item}: expected SPEC or SPEC:K=V[:K=V] (e.g. deltanet:heads=9)",
                file=sys.stderr,
            )
            sys.exit(2)
        out.append(" ".join([name, *sets]))
    return out


def write_bytecode() -> None:
    """archdsl's and Triton's bytecode, as a plain ``pip install`` writes it (no-op where it exists)."""
    import compileall

    # codegen/ and search/ are archdsl's subpackages, in their own folders in a source checkout
    folders = {p for m in ("archdsl", "archdsl.codegen", "archdsl.search", "triton") for p in find(m)}
    for folder in sorted(folders):
        compileall.compile_dir(folder, quiet=1, workers=0)


def find(module: str) -> list[str]:
    """The folders a package is imported from (none where it is missing), without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except ImportError:
        return []
    return list(spec.submodule_search_locations or []) if spec else []


def table(rows: list[dict]) -> str:
    out = [
        "| spec | dim | strategy | cold first call (s) | cold process (s) | cached first call (s) | "
        "cached first less its steady call (s) | steady call (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, w = r["cold"], r["cached"]
        if "error" in c:
            out.append(f"| {r['spec']} | | | {c['error']} | | | | |")
            continue
        cached, over = (
            (w["error"], "")
            if "error" in w
            else (f"{w['first_s']:.2f}", f"{w['first_s'] - w['second_s']:.2f}")
        )
        out.append(
            f"| {r['spec']} | {c['dim']} | {c['strategy']} | {c['first_s']:.1f} | {c['wall_s']:.1f} | "
            f"{cached} | {over} | {c['second_s'] * 1e3:.1f} |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--specs", default="", help="comma-separated, each SPEC or SPEC:K=V[:K=V]; default every specs/*.rnn"
    )
    p.add_argument("--params", default="100M")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--strategy", default="auto")
    p.add_argument("--lanes", type=int, default=1)
    p.add_argument("--device", default="cuda", help="cpu: a smoke test of this script (TRITON_INTERPRET=1)")
    p.add_argument("--timeout", type=int, default=240)
    p.add_argument(
        "--profile", action="store_true", help="profile each cached first call: OUT/profile-<spec>.txt"
    )
    p.add_argument("--commit", default="", help="the archdsl commit measured, for the header")
    args = p.parse_args()
    specs = args.specs.split(",") if args.specs else sorted(p.stem for p in (ROOT / "specs").glob("*.rnn"))
    specs = rows_of(specs)
    args.out.mkdir(parents=True, exist_ok=True)
    write_bytecode()
    with ThreadPoolExecutor(args.lanes) as pool:
        rows = list(pool.map(lambda ij: one_spec(ij[1], ij[0] % args.lanes, args), enumerate(specs)))
    import torch
    import triton

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    head = (
        f"Device: {device} × {torch.cuda.device_count()}; torch {torch.__version__}, "
        f"triton {triton.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"python {platform.python_version()}; archdsl {args.commit or '?'}.\n"
        f"Command: `python {' '.join(sys.argv)}`; B {args.batch}, T {args.seq}, bf16 autocast, forward + "
        f"backward of one layer at --params {args.params}; {args.lanes} specs at once.\n"
    )
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    (args.out / "results.md").write_text(head + "\n" + table(rows) + "\n")
    print(head + table(rows))


if __name__ == "__main__":
    main()
