"""What a spec's first call compiles, counted on the CPU (no GPU needed): per spec at its ``--params``
shape, the strategy, the launch plans the autotuner would time, the Triton kernels each generated
module holds, and the Python side of building them (parse/check, autodiff, emit, ruff format,
import), with the kernel cache empty and again warm.

    python benchmarks/compile_census.py [--specs e88,gdn] [--params 100M] [--out census.md]

Triton's compile time itself is not measured here (it happens on the first GPU launch); the kernel
counts say how many compiles a cold first call pays: every candidate module's kernels are compiled
before the tuner can time it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    """Seconds spent inside wrapped functions, by phase (an inner phase is not counted twice)."""

    def __init__(self):
        self.spent: dict[str, float] = defaultdict(float)
        self.depth = 0

    def wrap(self, module, attr: str, phase: str) -> None:
        fn = getattr(module, attr)

        def timed(*a, **k):
            if self.depth:
                return fn(*a, **k)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.spent[phase] += time.perf_counter() - t0
                self.depth -= 1

        setattr(module, attr, timed)


def instrument(clock: Clock) -> None:
    import archdsl.codegen.emit.module as emod
    import archdsl.codegen.run.loop as loop
    import archdsl.codegen.run.runtime as runtime

    clock.wrap(emod, "format_source", "format")
    clock.wrap(loop, "derive_backward", "autodiff")
    clock.wrap(loop, "hoist", "autodiff")
    clock.wrap(loop, "split_readout", "autodiff")
    clock.wrap(runtime.importlib.util, "spec_from_file_location", "import")
    clock.wrap(loop, "load_module", "write+import")


def census(spec: str, params: str, clock: Clock) -> dict:
    from archdsl.codegen import compile_cell
    from archdsl.codegen.run.tune import TunedCell

    from archdsl.autodiff import extract_cell
    from archdsl.lm.budget import solve, spec_layer
    from archdsl.lm.model import ModelConfig

    t0 = time.perf_counter()
    cfg0 = ModelConfig(model=spec, backend="triton")
    cfg = solve(cfg0, params, cfg0.tolerance)
    t_solve = time.perf_counter() - t0
    t0 = time.perf_counter()
    ir = spec_layer(cfg)
    extract_cell(ir)
    t_parse = time.perf_counter() - t0
    row = {"spec": spec, "dim": ir.dim, "solve_s": t_solve, "parse_check_s": t_parse}
    clock.spent.clear()
    t0 = time.perf_counter()
    cc = compile_cell(ir)
    if isinstance(cc, TunedCell):
        default = cc.build(None, None)
        row["build_default_s"] = time.perf_counter() - t0
        row["phases_default"] = dict(clock.spent)
        clock.spent.clear()
        t0 = time.perf_counter()
        cands = cc.candidates(default)
        row["build_candidates_s"] = time.perf_counter() - t0
        row["phases_candidates"] = dict(clock.spent)
        row["strategy"] = cc.strategy_entry.name
        row["plans"] = [(c.plan.n_tiles, c.plan.num_warps) for _, _, c in cands]
        row["kernels_per_module"] = Path(default.path).read_text().count("_kernel(")
        row["source_lines"] = Path(default.path).read_text().count("\n")
        # the cached path: the default's module again (the autotune key) and the chosen plan's
        clock.spent.clear()
        t0 = time.perf_counter()
        cc.build(None, None)
        row["rebuild_default_s"] = time.perf_counter() - t0
        row["phases_rebuild"] = dict(clock.spent)
    else:
        row["build_default_s"] = time.perf_counter() - t0
        row["phases_default"] = dict(clock.spent)
        row["strategy"] = getattr(cc, "strategy", "?")
        row["plans"] = [None]
        path = getattr(cc, "path", None)
        row["kernels_per_module"] = Path(path).read_text().count("_kernel(") if path else "-"
    return row


def fmt(row: dict) -> str:
    ph = row.get("phases_default", {})
    n = len(row["plans"])
    k = row["kernels_per_module"]
    compiles = n * k if isinstance(k, int) else "-"
    return (
        f"| {row['spec']} | {row['dim']} | {row['strategy']} | {n} | {k} | {compiles} | "
        f"{row['parse_check_s']:.2f} | {ph.get('autodiff', 0):.2f} | {ph.get('format', 0):.2f} | "
        f"{ph.get('import', 0):.2f} | {row['build_default_s']:.2f} | "
        f"{row.get('build_candidates_s', 0):.2f} | "
        f"{row.get('rebuild_default_s', 0):.2f} |"
    )


HEAD = (
    "| spec | dim | strategy | plans timed | kernels per generated module | kernels compiled cold (≤) | "
    "parse+check (s) | autodiff (s) | ruff format (s) | import (s) | default build (s) | "
    "other candidates (s) | warm rebuild (s) |\n|" + "---|" * 13
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--specs", default="")
    p.add_argument("--params", default="100M")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    os.environ.setdefault("ARCHDSL_CACHE", tempfile.mkdtemp(prefix="census-"))
    os.environ["ARCHDSL_PROGRESS"] = "0"
    specs = args.specs.split(",") if args.specs else sorted(q.stem for q in (ROOT / "specs").glob("*.rnn"))
    clock = Clock()
    instrument(clock)
    lines = [HEAD]
    print(HEAD, flush=True)
    for spec in specs:
        try:
            with contextlib.redirect_stderr(None):
                line = fmt(census(spec, args.params, clock))
        except Exception as e:  # a spec the solver cannot size is a row, not the end of the census
            line = f"| {spec} | {type(e).__name__}: {str(e)[:120]} |"
        lines.append(line)
        print(line, flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
