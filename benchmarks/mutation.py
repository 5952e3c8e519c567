"""Planted single-point bugs in the compiler, and whether the fast tests catch each one.

Each mutant is one text substitution in ``archdsl/autodiff.py``, ``archdsl/reference.py``,
``codegen/emit/triton.py``, ``codegen/hoist.py`` or ``codegen/emit/persistent.py``. The script applies one,
runs the tests that should catch it (``pytest -x``, a time limit each), restores the file and goes
on; it prints a Markdown table and the kill score. A mutant marked ``gpu`` changes only what the
CPU interpreter cannot see (programs running at once); ``tests/test_gpu.py`` is meant to catch it
and it is counted apart.

    nice .venv/bin/python benchmarks/mutation.py [--only ID ...] [--timeout S] [--out FILE]

The files on disk never change: ``benchmarks/mutant_plugin.py`` compiles the mutated module in
the test process (``ARCHDSL_MUTANT=<id>``), so ``--jobs`` mutants run at once. Generated kernels go
to a temporary ARCHDSL_CACHE.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AD, REF, TRI, HOIST, PERS = (
    "archdsl/autodiff.py",
    "archdsl/reference.py",
    "codegen/emit/triton.py",
    "codegen/hoist.py",
    "codegen/emit/persistent.py",
)

# the tests each kind of mutant runs: (files, -k expression)
OPS = ["tests/test_ops.py", "tests/test_structure.py"]
GROUPS = {
    "vjp": (OPS, "vjp or renaming or leaves or kernel or cycle"),
    "ref": (OPS, "reference or bf16 or renaming or kernel"),
    "kernel": ([*OPS, "tests/test_scratch.py"], "kernel or padded or hoisted or disjoint or cycle"),
    "hoist": (["tests/test_structure.py", "tests/test_hoist.py"], None),
    "persistent": (
        ["tests/test_persistent.py", "tests/test_kernels.py"],
        "not kernel_matches_reference and not single_step and not e88 and not torch_compile and not every_op",
    ),
    "gpu": (["tests/test_gpu.py"], "persistent"),  # on a CUDA machine: the persistent grid at once
}


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    old: str
    new: str
    group: str
    gpu: bool = False  # visible only where programs run at once
    count: int = 1  # occurrences replaced (all of them must be there)


def m(id, file, old, new, group, **kw) -> Mutant:
    return Mutant(id, file, old, new, group, **kw)


MUTANTS = [
    # -- autodiff: the VJP rules
    m(
        "vjp-log",
        AD,
        "Op.LOG: _vjp_unary(lambda e, z, a, dz: e.add(Op.DIV, (dz, a)))",
        "Op.LOG: _vjp_unary(lambda e, z, a, dz: e.add(Op.MUL, (dz, a)))",
        "vjp",
    ),
    m("vjp-relu-sign", AD, "_mul(e, dz, _step(e, a)))", "_mul(e, dz, e.unary(Op.SIGN, a)))", "vjp"),
    m(
        "vjp-abs-step",
        AD,
        "Op.ABS: _vjp_unary(lambda e, z, a, dz: _mul(e, dz, e.unary(Op.SIGN, a)))",
        "Op.ABS: _vjp_unary(lambda e, z, a, dz: _mul(e, dz, _step(e, a)))",
        "vjp",
    ),
    m(
        "vjp-max-swapped",
        AD,
        "Op.MAXIMUM: lambda e, n, z, args, dz: _select(e, e.add(Op.SUB, args), dz)",
        "Op.MAXIMUM: lambda e, n, z, args, dz: _select(e, e.add(Op.SUB, args[::-1]), dz)",
        "vjp",
    ),
    m(
        "vjp-min-swapped",
        AD,
        "Op.MINIMUM: lambda e, n, z, args, dz: _select(e, e.add(Op.SUB, args[::-1]), dz)",
        "Op.MINIMUM: lambda e, n, z, args, dz: _select(e, e.add(Op.SUB, args), dz)",
        "vjp",
    ),
    m(
        "vjp-tie-to-b",
        AD,
        "s = _mul(e, e.const(0.5), e.add(Op.ADD, (e.const(1), e.add(Op.SIGN, (diff,)))))",
        "s = _step(e, diff)",
        "vjp",
    ),
    m(
        "vjp-step-passes",
        AD,
        "Op.STEP: lambda e, n, z, args, dz: [None]",
        "Op.STEP: lambda e, n, z, args, dz: [dz]",
        "vjp",
    ),
    m(
        "vjp-sign-passes",
        AD,
        "Op.SIGN: lambda e, n, z, args, dz: [None]",
        "Op.SIGN: lambda e, n, z, args, dz: [dz]",
        "vjp",
    ),
    m(
        "vjp-rename-forward-perm",
        AD,
        "tuple((b, a) for a, b in n.attr)",
        "tuple((a, b) for a, b in n.attr)",
        "vjp",
    ),
    m(
        "vjp-softplus-of-output",
        AD,
        "_mul(e, dz, e.unary(Op.SIGMOID, a))",
        "_mul(e, dz, e.unary(Op.SIGMOID, z))",
        "vjp",
    ),
    m("vjp-tanh", AD, "e.add(Op.SUB, (e.const(1), _mul(e, z, z)))", "e.add(Op.SUB, (e.const(1), z))", "vjp"),
    m(
        "vjp-sigmoid",
        AD,
        "_mul(e, dz, _mul(e, z, e.add(Op.SUB, (e.const(1), z))))",
        "_mul(e, dz, e.add(Op.SUB, (e.const(1), z)))",
        "vjp",
    ),
    m(
        "vjp-exp-of-input",
        AD,
        "Op.EXP: _vjp_unary(lambda e, z, a, dz: _mul(e, dz, z))",
        "Op.EXP: _vjp_unary(lambda e, z, a, dz: _mul(e, dz, a))",
        "vjp",
    ),
    m("vjp-sqrt-factor", AD, "_mul(e, dz, e.const(0.5)), z)", "_mul(e, dz, e.const(2.0)), z)", "vjp"),
    m(
        "vjp-neg",
        AD,
        "Op.NEG: _vjp_unary(lambda e, z, a, dz: e.add(Op.NEG, (dz,)))",
        "Op.NEG: _vjp_unary(lambda e, z, a, dz: dz)",
        "vjp",
    ),
    m("vjp-sub", AD, "[dz, e.add(Op.NEG, (dz,))]", "[dz, dz]", "vjp"),
    m(
        "vjp-mul-crossed",
        AD,
        "[_mul(e, dz, args[1]), _mul(e, dz, args[0])]",
        "[_mul(e, dz, args[0]), _mul(e, dz, args[1])]",
        "vjp",
    ),
    m(
        "vjp-div-numerator",
        AD,
        "        e.add(Op.DIV, (dz, args[1])),\n",
        "        e.add(Op.MUL, (dz, args[1])),\n",
        "vjp",
    ),
    m(
        "vjp-div-denominator-sign",
        AD,
        "e.add(Op.NEG, (e.add(Op.DIV, (_mul(e, dz, z), args[1])),))",
        "e.add(Op.DIV, (_mul(e, dz, z), args[1]))",
        "vjp",
    ),
    m("vjp-no-fanout-sum", AD, "ct[i] = em.add(Op.ADD, (ct[i], c)) if i in ct else c", "ct[i] = c", "vjp"),
    m(
        "vjp-unreached-one",
        AD,
        "em.expand_to(em.const(0.0), axes)",
        "em.expand_to(em.const(1.0), axes)",
        "vjp",
    ),
    # -- reference: the meaning of each op
    m(
        "ref-softplus-above-1",
        REF,
        "Op.SOFTPLUS: F.softplus,",
        "Op.SOFTPLUS: lambda a: F.softplus(a, threshold=1.0),",
        "ref",
    ),
    m(
        "ref-bf16-in-bf16",
        REF,
        "return torch.float64 if t.dtype == torch.float64 else torch.float32",
        "return t.dtype",
        "ref",
    ),
    m(
        "ref-step-at-0",
        REF,
        "Op.STEP: lambda a: (a > 0).to(a.dtype),",
        "Op.STEP: lambda a: (a >= 0).to(a.dtype),",
        "ref",
    ),
    m(
        "ref-sign-at-0",
        REF,
        "Op.SIGN: torch.sign,",
        "Op.SIGN: lambda a: (a >= 0).to(a.dtype) * 2 - 1,",
        "ref",
    ),
    m("ref-relu-abs", REF, "Op.RELU: torch.relu,", "Op.RELU: torch.abs,", "ref"),
    m("ref-max-min", REF, "Op.MAXIMUM: torch.maximum,", "Op.MAXIMUM: torch.minimum,", "ref"),
    m("ref-log1p", REF, "Op.LOG: torch.log,", "Op.LOG: torch.log1p,", "ref"),
    m("ref-abs-relu", REF, "Op.ABS: torch.abs,", "Op.ABS: torch.relu,", "ref"),
    m("ref-tanh-hard", REF, "Op.TANH: torch.tanh,", "Op.TANH: F.hardtanh,", "ref"),
    m(
        "ref-rename-inverse",
        REF,
        "{pos[new]: pos[old] for old, new in mapping}",
        "{pos[old]: pos[new] for old, new in mapping}",
        "ref",
    ),
    m(
        "ref-sum-axis",
        REF,
        "layout.axes.index(node.attr), keepdim=True)",
        "layout.axes.index(node.attr) - 1, keepdim=True)",
        "ref",
    ),
    # -- codegen/emit/triton.py: the emitted code
    m(
        "tri-sum-no-padding-mask",
        TRI,
        '"tl.sum(tl.where({mask}, {0}, 0.0), axis={axis}, keep_dims=True)"',
        '"tl.sum({0}, axis={axis}, keep_dims=True)"',
        "kernel",
    ),
    m(
        "tri-token-bwd-no-t-mask",
        TRI,
        "k.w(f\"{k.dblk('const', c)} += tl.where(z0 + t < T, b{bwd.d_consts[c]}, 0.0)\", 2)",
        "k.w(f\"{k.dblk('const', c)} += b{bwd.d_consts[c]}\", 2)",
        "kernel",
    ),
    m("tri-sign-0", TRI, "tl.where({0} < 0, -1.0, 0.0)", "tl.where({0} < 0, -1.0, 1.0)", "kernel"),
    m("tri-step-0", TRI, '"tl.where({0} > 0, 1.0, 0.0)"', '"tl.where({0} >= 0, 1.0, 0.0)"', "kernel"),
    m("tri-relu-abs", TRI, '"tl.maximum({0}, 0.0)"', '"tl.abs({0})"', "kernel"),
    m(
        "tri-softplus-above-1",
        TRI,
        "return tl.maximum(x, 0.0) + _log1p(tl.exp(-tl.abs(x)))",
        "return tl.where(x > 1.0, x, tl.maximum(x, 0.0) + _log1p(tl.exp(-tl.abs(x))))",
        "kernel",
    ),
    m(
        "tri-tanh-series",
        TRI,
        "small = ax * (1.0 - x2 / 3.0 * (1.0 - 0.4 * x2))",
        "small = ax * (1.0 - x2 / 3.0)",
        "kernel",
    ),
    m("tri-min-max", TRI, '"tl.minimum({0}, {1})"', '"tl.maximum({0}, {1})"', "kernel"),
    m("tri-div-flipped", TRI, 'Op.DIV: "{0} / {1}"', 'Op.DIV: "{1} / {0}"', "kernel"),
    m("tri-sub-flipped", TRI, 'Op.SUB: "{0} - {1}"', 'Op.SUB: "{1} - {0}"', "kernel"),
    m(
        "tri-bwd-state-unmasked",
        TRI,
        "k.w(f\"{k.dblk('state', s)} = tl.where({k.mask(cell.states[s])}, b{bwd.d_state[s]}, 0.0)\", 3)",
        "k.w(f\"{k.dblk('state', s)} = b{bwd.d_state[s]}\", 3)",
        "kernel",
    ),
    m("tri-scratch-overlap", TRI, "(pid * (CHUNK + 1) + ", "(pid * CHUNK + ", "kernel"),
    m("tri-pid-no-batch", TRI, 'k.w(f"pid = i_b * {plan.n_tiles} + i_s")', 'k.w("pid = i_s")', "kernel"),
    m("tri-checkpoint-offset", TRI, 'k.w("if t % CHUNK == 0:", 2)', 'k.w("if t % CHUNK == 1:", 2)', "kernel"),
    m(
        "tri-full-last-segment",
        TRI,
        'k.w("L = tl.minimum(T - t0, CHUNK)", 2)',
        'k.w("L = CHUNK", 2)',
        "kernel",
    ),
    m(
        "tri-dx-tile-index",
        TRI,
        "((i_b * T + t) * {nt} + {idx}) * {_numel(plan, ax)}",
        "((i_b * T + t) * {nt}) * {_numel(plan, ax)}",
        "kernel",
    ),
    m("tri-token-pid", TRI, 'k.w("pid = i_b * NC + i_s")', 'k.w("pid = i_s")', "kernel"),
    m(
        "tri-stash-step",
        TRI,
        "scratch(s, 's + 1')",
        "scratch(s, 's')",
        "kernel",
    ),
    # -- codegen/hoist.py
    m(
        "hoist-no-consts",
        HOIST,
        "consts = {c: ax for c, ax in cell.consts.items() if (Op.PARAM, c) in leaves}",
        "consts = {}",
        "hoist",
    ),
    m(
        "hoist-reaches-state",
        HOIST,
        "return any(g[i].op is Op.STATE for i in g.ancestors([root], stop={cut}))",
        "return False",
        "hoist",
    ),
    m("hoist-outer-product", HOIST, "if numel[i] <= largest_input[i]:", "if True:", "hoist"),
    m(
        "hoist-frontier-kind",
        HOIST,
        "if g[i].op in LEAVES or kinds[i] != Kind.TOKEN or i in frontier:",
        "if g[i].op in LEAVES or i in frontier:",
        "hoist",
    ),
    # -- codegen/emit/persistent.py (the CPU runs it one step per launch)
    m(
        "pers-k-mask",
        PERS,
        "mask=(rq[:, None] < {D}) & (rn[None, :] < {D}), other=0.0)",
        "mask=(rn[None, :] < {D}), other=0.0)",
        "persistent",
    ),
    m(
        "pers-const-grad-overwrite",
        PERS,
        "tl.store({ptr}, tl.load({ptr}, mask={msk}, other=0.0) + {k.dblk('const', c)}, mask={msk})",
        "tl.store({ptr}, {k.dblk('const', c)}, mask={msk})",
        "persistent",
    ),
    m("pers-batch-mask", PERS, 'self.w("m__b = o__b < B")', 'self.w("m__b = o__b < B + 1")', "persistent"),
    m(
        "pers-reverse-order",
        PERS,
        'k.w("t = t_hi - 1 - i_t", 2)',
        'k.w("t = t_lo + i_t", 2)',
        "gpu",
        gpu=True,
    ),
    m(
        "pers-barrier-one-short",
        PERS,
        "_grid_wait(p_sync, NP * i_t)  # every row of the previous state",
        "_grid_wait(p_sync, NP * i_t - NP)  # every row of the previous state",
        "gpu",
        gpu=True,
    ),
]


def run_tests(group: str, timeout: float, env: dict, mutant: str = "") -> tuple[str, float, str]:
    files, expr = GROUPS[group]
    path = os.pathsep.join(p for p in (str(ROOT / "benchmarks"), env.get("PYTHONPATH", "")) if p)
    env = {**env, "ARCHDSL_MUTANT": mutant, "PYTHONPATH": path}
    if group == "gpu":  # on the GPU itself: with the interpreter set, tests/test_gpu.py skips everything
        env.pop("TRITON_INTERPRET", None)
    # -P: the repository's own folder is not put on the path, so an installed archdsl (a wheel on a
    # GPU machine) is the one imported, not the source tree (whose archdsl/ lacks archdsl.codegen)
    cmd = [
        sys.executable,
        *(["-P"] if sys.version_info >= (3, 11) else []),
        "-m",
        "pytest",
        "-x",  # quiet through the project's addopts (-q), which still prints the "N passed" summary
        "-n",
        "0",
        "-p",
        "no:warnings",
        "-p",
        "mutant_plugin",
        *files,
    ]
    if expr:
        cmd += ["-k", expr]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.time() - t0, ""
    failed = [ln for ln in proc.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    if proc.returncode == 0 and " passed" not in proc.stdout:  # every test skipped: nothing was checked
        return "not run", time.time() - t0, (proc.stdout.strip().splitlines() or [""])[-1]
    return ("survived" if proc.returncode == 0 else "killed"), time.time() - t0, (failed[:1] or [""])[0]


def applies(mut: Mutant) -> bool:
    return (ROOT / mut.file).read_text().count(mut.old) == mut.count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="mutant ids to run (default: all)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per mutant's test run")
    ap.add_argument("--jobs", type=int, default=2, help="mutants run at once")
    ap.add_argument("--out", type=Path, help="also write the Markdown report here")
    ap.add_argument("--check", action="store_true", help="only check that every substitution applies")
    ap.add_argument("--no-baseline", action="store_true", help="skip running each group unmutated first")
    ap.add_argument(
        "--gpu", action="store_true", help="also run the GPU-only mutants (they survive on a CPU)"
    )
    args = ap.parse_args(argv)
    muts = [
        x for x in MUTANTS if (not args.only or x.id in args.only) and (args.gpu or not x.gpu or args.only)
    ]
    bad = [x.id for x in muts if not applies(x)]
    if bad:
        raise SystemExit(f"error: mutants that do not apply (expected text not found): {', '.join(bad)}")
    if args.check:
        print(f"{len(muts)} mutants apply")
        return 0
    env = {
        **os.environ,
        "ARCHDSL_CACHE": tempfile.mkdtemp(prefix="archdsl-mutants-"),
        "TRITON_INTERPRET": "1",
    }
    groups = [] if args.no_baseline else sorted({x.group for x in muts})
    with ThreadPoolExecutor(args.jobs) as pool:  # every group passes unmutated
        for group, (status, secs, first) in zip(
            groups, pool.map(lambda g: run_tests(g, args.timeout, env), groups)
        ):
            if status != "survived":
                raise SystemExit(f"error: the unmutated tests of group {group} fail ({status}): {first}")
            print(f"{'(unmutated ' + group + ')':28} passes    {secs:6.1f}s", flush=True)

    def one(mut: Mutant):
        status, secs, first = run_tests(mut.group, args.timeout, env, mut.id)
        print(f"{mut.id:28} {status:9} {secs:6.1f}s {first}", flush=True)
        return mut, status, secs, first

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, muts))
    report = render(rows)
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


def render(rows) -> str:
    cpu = [r for r in rows if not r[0].gpu]
    killed = [r for r in cpu if r[1] != "survived"]
    lines = [
        "| mutant | file | tests | result | seconds | first failing test |",
        "|---|---|---|---|---|---|",
    ]
    for mut, status, secs, first in rows:
        name = first.removeprefix("FAILED ").split(" - ")[0]
        tag = " (gpu)" if mut.gpu else ""
        lines.append(f"| {mut.id}{tag} | {mut.file} | {mut.group} | {status} | {secs:.0f} | {name} |")
    score = (
        f"{len(killed)}/{len(cpu)} CPU-visible mutants killed ({100 * len(killed) / max(1, len(cpu)):.0f}%)"
    )
    survivors = ", ".join(r[0].id for r in cpu if r[1] == "survived") or "none"
    ran = {r[0].id for r in rows}
    gpu = ", ".join(
        f"{x.id} ({next(r[1] for r in rows if r[0] is x) if x.id in ran else 'not run'})"
        for x in MUTANTS
        if x.gpu
    )
    return "\n".join(
        [*lines, "", score, f"survivors: {survivors}", f"GPU-only mutants on the CPU: {gpu}", ""]
    )


if __name__ == "__main__":
    sys.exit(main())
