"""``archdsl bench MODEL… --params 100M --minutes 10 --data PATH``: the same clock for every model.

Each model trains in a fresh process (``archdsl train``, one run directory each under ``--out``) on
the same data and seed; the results table (Markdown and JSON) and a plot of training loss against
timed seconds are written to ``--out``. A model that fails is a row with its reason; the others go on.
``--compile`` and ``--compile-mode`` (or ``--train-args``) apply to every model alike, spec or
baseline; the table's Settings column says how each model's step ran (``eager``, ``compile``,
``compile+cudagraphs``, …). ``--modes eager,compile,cudagraphs`` trains every model once in each step
mode instead and adds a table of each model at its best working mode (the most tokens/s of its runs
that finished).

MODEL is a baseline (mamba2, fla-gdn, llama, lstm, gru, nn-lstm, nn-gru), a spec (path or bundled
name), a preset of a bundled spec (``E88_d12h32``), or ``SPEC:ITEM,ITEM…`` where an item is a preset
name or a ``key=value`` setting (``e88:heads=32,n=16``, ``e88:E88_h8n64,gate=silu``); ``products=half``
and ``keep_states=true`` there are the compiled kernels' settings (``archdsl train --products``,
``--keep-states``): ``gdn:products=half``, ``E88_d12h32:keep_states=true``.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

from archdsl import args as A
from archdsl.errors import ArchdslError, did_you_mean
from archdsl.lm import budget
from archdsl.train import trainlog
from archdsl.train.benchtable import Entry, best_rows, cells, markdown, row, write_results
from archdsl.train.config import CHOICES, step_settings

#: ``--modes``' names: (compile, compile mode), named as the Settings column names them
MODES = {
    "eager": (False, None),
    "compile": (True, "default"),
    "cudagraphs": (True, "reduce-overhead"),
    "autotune": (True, "max-autotune-no-cudagraphs"),
    "autotune+cudagraphs": (True, "max-autotune"),
}


def modes(text: str) -> list[str]:
    """``--modes``' value: names of ``MODES``, comma-separated, each once."""
    import argparse

    names = [m.strip() for m in text.split(",") if m.strip()]
    for m in names:
        if m not in MODES:
            hint = did_you_mean(m, list(MODES), "modes")
            raise argparse.ArgumentTypeError(f"unknown mode '{m}'" + (f" ({hint})" if hint else ""))
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct modes out of {', '.join(MODES)}, found '{text}'")
    return names


def add_arguments(p) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL", help="baselines, specs, presets or SPEC:ITEM,…")
    p.add_argument(
        "--params",
        type=A.count,
        help="parameter budget for every model (250K, 100M, 1.3B): widths are solved",
    )
    p.add_argument(
        "--align", type=A.positive_int, default=1, help="solved widths are multiples of this (research: 128)"
    )
    p.add_argument(
        "--tolerance", type=A.positive_float, default=0.1, help="largest relative miss of the budget (0.1)"
    )
    p.add_argument("--depth", type=A.positive_int, help="layers (default: the preset's depth, else 20)")
    budget_group = p.add_mutually_exclusive_group()
    budget_group.add_argument("--minutes", type=A.positive_float, help="timed training minutes per model")
    budget_group.add_argument("--steps", type=A.positive_int, help="training steps per model")
    budget_group.add_argument("--tokens", type=A.count, help="training tokens per model (e.g. 50M)")
    p.add_argument(
        "--data",
        nargs="+",
        action="extend",
        default=[],
        help="training byte files (default: the embedded corpus)",
    )
    p.add_argument("--val", help="held-out file (default: the tail of the training stream)")
    p.add_argument("--batch", type=A.positive_int, help="windows per step (default 32)")
    p.add_argument("--seq", type=A.positive_int, help="bytes per window (default 512)")
    p.add_argument("--device", type=A.device, help="cuda | cpu (default: cuda when available)")
    p.add_argument("--backend", default="reference", help="spec cell backend: reference | triton")
    p.add_argument("--seed", type=A.nonnegative_int, default=0, help="the same seed for every model")
    p.add_argument("--compile", action="store_true", help="torch.compile every model's step (off the clock)")
    p.add_argument(
        "--compile-mode",
        choices=CHOICES["compile_mode"],
        help="with --compile, for every model: reduce-overhead replays CUDA graphs (default: default)",
    )
    p.add_argument(
        "--modes",
        type=modes,
        help="train every model once in each step mode (" + ", ".join(MODES) + "), comma-separated, "
        "and tabulate each at its best",
    )
    p.add_argument(
        "--out", type=A.writable_dir, default=None, help="results directory (default runs/bench-<date>)"
    )
    p.add_argument(
        "--train-args",
        default="",
        metavar="'OPTIONS'",
        help="more options for every 'archdsl train', e.g. --train-args='--compile --lr 1e-3'",
    )
    p.add_argument("--timeout", type=A.positive_float, help="seconds before a model's run is stopped")
    p.add_argument("--dry-run", action="store_true", help="print the solved sizes and stop")


# ---- models --------------------------------------------------------------------------------------
def _preset_owners() -> dict[str, str]:
    from archdsl.lang.checker import declarations

    owners: dict[str, str] = {}
    for name in budget.bundled():
        try:
            for preset in declarations(budget.load_spec(name)).presets:
                owners.setdefault(preset, name)
        except ArchdslError:
            continue
    return owners


def _is_spec(name: str) -> bool:
    try:
        budget.spec_path(name)
        return True
    except ArchdslError:
        return False


def parse_model(text: str, args):
    """A MODEL argument -> a ModelConfig (not yet solved); its ``key=value`` items are the spec's
    settings, read as ``archdsl train --set`` reads them (archdsl/config.py)."""
    from archdsl.config import apply_overrides
    from archdsl.lm.config import ModelConfig

    name, _, items = text.partition(":")
    preset, sets = None, []
    for item in filter(None, (i.strip() for i in items.split(","))):
        if item.startswith(("products=", "keep_states=")):  # the kernels' settings, not the spec's
            sets.append(item)
        elif "=" in item:
            sets.append(f"sets.{item}")
        elif preset is None:
            preset = item
        else:
            raise ArchdslError(f"'{text}': two presets ('{preset}', '{item}')")
    if not budget.is_baseline(name) and not _is_spec(name):
        owners = _preset_owners()
        if name not in owners:
            raise ArchdslError(
                f"unknown model '{name}'",
                hint=did_you_mean(
                    name, [*budget.MODELS, *budget.bundled(), *owners], "baselines, specs and presets"
                ),
            )
        if preset is not None:
            raise ArchdslError(f"'{text}': '{name}' is already a preset of {owners[name]}")
        name, preset = owners[name], name
    cfg = ModelConfig(
        name,
        preset=preset,
        depth=args.depth,
        align=args.align,
        backend=args.backend,
        seed=args.seed,
        tolerance=args.tolerance,
    )
    return apply_overrides(cfg, sets, f"'{text}':")


def entries(args) -> list[Entry]:
    target = budget.parse_count(args.params) if args.params else None
    out = []
    for text in args.models:
        try:
            cfg = parse_model(text, args)
            cfg = budget.solve(cfg, target, args.tolerance) if target else cfg
            budget.sizes(cfg)  # a bad setting or width fails here, before any training
            if cfg.products is not None or cfg.keep_states:  # refused here, before any model trains
                from archdsl.lm.zoo import check_keep_states, check_products

                check_products(cfg)
                check_keep_states(cfg)
            out.append(Entry(text, cfg))
        except ArchdslError as e:
            out.append(Entry(text, None, e.message + (f" ({e.hint})" if e.hint else "")))
    return out


def _describe(e: Entry, target: int | None = None) -> str:
    if e.cfg is None:
        return f"{e.label}: {e.error}"
    return f"{e.label}: " + budget.describe(e.cfg, target).split(": ", 1)[1]


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "model"


# ---- one run -------------------------------------------------------------------------------------
#: the bench flags that are training settings, passed on to every run as they are
TRAIN_SETTINGS = (
    *("minutes", "steps", "tokens", "batch", "seq", "device", "val", "data", "compile", "compile_mode"),
)


def train_config(cfg, args, out: Path):
    """The TrainConfig of one model's run: the bench's training flags, its seed and folder."""
    from archdsl.config import apply_overrides, format_value
    from archdsl.train.config import TrainConfig

    given = [(k, getattr(args, k)) for k in TRAIN_SETTINGS if getattr(args, k) not in (None, [])]
    items = [f"{k}={format_value(v)}" for k, v in given] + [f"seed={cfg.seed}"]
    # a benchmark measures anew: it replaces a run left in its folder by an earlier one
    items += [f"out={format_value(str(out), str)}", "force=true"]
    return apply_overrides(TrainConfig, items, "archdsl bench")


def train_argv(cfg, args, out: Path) -> list[str]:
    """``archdsl train``'s arguments for one model (its width already solved), --train-args last."""
    from archdsl.train.cli import command

    argv = command(cfg, train_config(cfg, args, out), leave_out=("progress", "checkpoint"))
    return [*argv[2:], *shlex.split(args.train_args)]


def train_command(cfg, args, out: Path) -> list[str]:
    """The ``archdsl train`` command line of one model."""
    return [sys.executable, "-m", "archdsl.cli", "train", *train_argv(cfg, args, out)]


def planned_settings(entry: Entry, args) -> str | None:
    """How the model's step is to run (``step_settings``), as its train command (with --train-args)
    says; None when that command does not parse."""
    import argparse

    from archdsl.train import cli

    parser = argparse.ArgumentParser(exit_on_error=False)
    cli.add_arguments(parser)
    try:
        _, cfg = cli.configs(parser.parse_args(train_argv(entry.cfg, args, Path("x"))))
    except (argparse.ArgumentError, ArchdslError, SystemExit):
        return None
    return step_settings(cfg.compile, cfg.compile_mode, cfg.compile_backend)


def _stop(proc: subprocess.Popen, grace: float = 120.0) -> None:
    """SIGTERM (the trainer checkpoints and exits), then SIGKILL after ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_one(entry: Entry, args, out: Path, echo=print) -> dict:
    """Train one model in a fresh process; its result dict, or {"status": "failed", "message": …}."""
    run_dir = out / slug(entry.label)
    run_dir.mkdir(parents=True, exist_ok=True)
    result_path = run_dir / "result.json"
    if result_path.exists():
        result_path.unlink()  # never report a previous run's numbers
    cmd = train_command(entry.cfg, args, run_dir)
    timeout = args.timeout or (args.minutes * 180 + 1800 if args.minutes else None)
    tail: list[str] = []
    with open(run_dir / "train.log", "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        # same process group: Ctrl-C reaches the trainer too, which checkpoints and stops
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        fired = threading.Event()  # Timer.cancel also sets the timer's own ``finished``

        def stop():
            fired.set()
            _stop(proc)

        watchdog = threading.Timer(timeout, stop) if timeout else None
        if watchdog:
            watchdog.start()
        try:
            for line in proc.stdout:
                log.write(line)
                echo(f"  {line.rstrip()}")
                tail = [*tail[-20:], line.rstrip()]
            rc = proc.wait()
        finally:
            if watchdog:
                watchdog.cancel()
    if fired.is_set() and rc != 0:
        return {"status": "failed", "message": f"stopped after {timeout:.0f} s (--timeout)"}
    if result_path.exists():  # a run that stopped early (non-finite, interrupted) says so in its status
        return trainlog.loads(result_path.read_text())  # strict JSON: "NaN" strings become floats
    reason = next((t for t in reversed(tail) if t.startswith("error") or ": error:" in t), None)
    reason = reason or next((t for t in reversed(tail) if t.strip()), "no output")
    return {"status": "failed", "message": f"exit status {rc}: {reason}"}


def plan_runs(todo: list[Entry], args) -> list[tuple[Entry, object]]:
    """(entry, its run's flags) of every run: one per model, or, with ``--modes``, one per model and
    mode (the row named ``MODEL [mode]``; ``entry.model`` keeps the model's own name)."""
    import argparse

    if not args.modes:
        return [(dataclasses.replace(e, model=e.label), args) for e in todo]
    if args.compile or args.compile_mode:
        raise ArchdslError("--modes sets each run's step mode: give it without --compile or --compile-mode")
    runs = []
    for e in todo:
        for m in args.modes:
            compile_, mode = MODES[m]
            flags = argparse.Namespace(**{**vars(args), "compile": compile_, "compile_mode": mode})
            runs.append((dataclasses.replace(e, label=f"{e.label} [{m}]", model=e.label), flags))
    return runs


def run(args) -> int:
    argv = ["archdsl", "bench", *(sys.argv[2:] if sys.argv[1:2] == ["bench"] else args.models)]
    todo = entries(args)
    if args.dry_run:
        for e in todo:
            print(_describe(e, budget.parse_count(args.params) if args.params else None))
        return 0 if all(e.cfg is not None for e in todo) else 2
    if args.minutes is None and args.steps is None and args.tokens is None:
        raise ArchdslError("give the training budget of each model: --minutes, --steps or --tokens")
    if args.compile_mode and not args.compile and not args.modes:
        raise ArchdslError(f"--compile-mode {args.compile_mode} is given without --compile")
    runs = plan_runs(todo, args)
    out = Path(args.out or f"runs/bench-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    rows, results = [], {}
    best = (lambda: best_rows(rows, runs, todo)) if args.modes else (lambda: None)
    try:
        for i, (e, flags) in enumerate(runs, 1):
            print(f"[{i}/{len(runs)}] {_describe(e)}", flush=True)
            rows.append(row(e, None))
            if e.cfg is None:
                continue
            planned = planned_settings(e, flags)
            rows[-1] = row(e, None, planned)
            results[e.label] = run_one(e, flags, out)
            rows[-1] = row(e, results[e.label], planned)
            c = cells(rows[-1])
            print(f"[{i}/{len(runs)}] {e.label}: loss {c[2]}, bpb {c[3]}, {c[4]} tokens/s ({c[5]}); {c[-1]}")
    except KeyboardInterrupt:
        rows[-1]["reason"] = rows[-1]["reason"] or "interrupted"
        print("archdsl bench: interrupted; writing the rows so far", file=sys.stderr)
        write_results(out, rows, results, args, argv, best())
        return 130
    write_results(out, rows, results, args, argv, best())
    print(markdown(rows, "results"))
    if args.modes:
        print(markdown(best(), "each model at its best mode"))
    written = [out / n for n in ("results.md", "results.json", "loss_vs_time.png") if (out / n).exists()]
    print("written: " + ", ".join(map(str, written)))
    return 0 if all(r["status"] == "ok" for r in rows) else 1
