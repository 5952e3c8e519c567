"""``archdsl search [SPEC_OR_BASELINE…] --budget 100M --minutes 10 [--trials N] …``.

Creates (or, with ``--resume``, continues) a study, runs its trials in worker processes (one per GPU,
or ``--workers N`` on the CPU; ``--join`` adds this host's workers to a study in a database), shows a
live table, re-trains the top-k configurations with more seeds, and writes the report.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
import warnings
from pathlib import Path

from archdsl import args as A
from archdsl.errors import ArchdslError

from . import study as st
from .feasible import feasible
from .repro import refuse_kernel_settings
from .space import DEFAULT_DEPTH, DEFAULT_MODEL, Space, number, parse_range

DEFAULT_TRIALS = 20
#: flags that define a study: given with --resume/--join they would silently not apply, so they are refused
DEFINING = (
    *("models", "budget", "minutes", "data", "val", "objective", "multi", "sampler", "no_prune"),
    *("heads", "n", "depth", "lr", "space", "set", "batch", "seq", "eval_bytes", "backend", "products"),
    *("keep_states", "device", "align", "seed", "trial_timeout", "tolerance"),
)


def add_arguments(p) -> None:
    p.add_argument(
        "models",
        nargs="*",
        help=f"specs or baselines to search (default {DEFAULT_MODEL}); "
        "several make the model a categorical choice",
    )
    p.add_argument(
        "--budget", type=A.count, help="parameter budget, e.g. 100M: every trial's width is solved to it"
    )
    p.add_argument("--minutes", type=A.positive_float, help="training minutes of each trial (default 10)")
    p.add_argument(
        "--trials",
        type=A.positive_int,
        help=f"trials to run (default {DEFAULT_TRIALS}; with --resume: this many more)",
    )
    p.add_argument("--study", help="study name (default MODEL-BUDGET); its files go to runs/<study>/")
    p.add_argument(
        "--storage",
        type=A.storage,
        help="database URL (postgresql://user@host/db) shared by several hosts; "
        "default: a journal file runs/<study>/study.journal",
    )
    p.add_argument(
        "--runs", type=A.writable_dir, help="root of the study folders: RUNS/<study>/ (default runs/)"
    )
    p.add_argument(
        "--data",
        nargs="+",
        action="extend",
        metavar="PATH",
        help="training byte files read as one stream (default: the embedded corpus)",
    )
    p.add_argument("--val", help="held-out file (default: the tail of the training data)")
    p.add_argument("--gpus", help="comma-separated GPU ids, or 'all': one worker per GPU")
    p.add_argument(
        "--workers", type=A.positive_int, default=1, help="worker processes on this host (CPU; default 1)"
    )
    p.add_argument("--objective", choices=st.OBJECTIVES, help="held-out bpb (default) or last-100 loss")
    p.add_argument("--multi", help="second objective(s) for a Pareto front: tokens_per_s, state")
    p.add_argument("--sampler", choices=("tpe", "cmaes"), help="Optuna sampler (default tpe)")
    p.add_argument(
        "--no-prune",
        dest="no_prune",
        action="store_true",
        default=None,
        help="never stop a trial early on its held-out bpb",
    )
    for name, example in (("heads", "4:64"), ("n", "16,32,64"), ("depth", "10:40"), ("lr", "1e-4:3e-3:log")):
        p.add_argument(f"--{name}", metavar="RANGE", help=f"search {name} in RANGE, e.g. {example}")
    p.add_argument(
        "--space",
        action="append",
        metavar="NAME=RANGE",
        help="search any hyper or choice, e.g. gate=none,silu or expansion=1:2",
    )
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="fix a hyper or choice")
    p.add_argument(
        "--enqueue",
        action="append",
        metavar="K=V,…",
        help="run this configuration first (e.g. heads=16,n=32,depth=20)",
    )
    p.add_argument("--resume", action="store_true", help="continue the study (--trials adds trials)")
    p.add_argument(
        "--join",
        action="store_true",
        help="only add this host's workers to an existing study (no re-runs, no report)",
    )
    p.add_argument(
        "--seeds", type=A.nonnegative_int, help="extra seeds for the top-k re-runs (default 2; 0: none)"
    )
    p.add_argument(
        "--top-k", dest="top_k", type=A.positive_int, help="configurations re-run with more seeds (default 3)"
    )
    p.add_argument("--batch", type=A.positive_int, help="sequences per step (default 32; 8 on the CPU)")
    p.add_argument("--seq", type=A.positive_int, help="bytes per sequence (default 512; 32 on the CPU)")
    p.add_argument(
        "--eval-bytes",
        dest="eval_bytes",
        type=A.positive_int,
        help="held-out bytes scored per evaluation (default 1M; 4K on the CPU)",
    )
    p.add_argument("--backend", choices=("reference", "triton"), help="cell backend of spec models")
    A.add_products(p)
    p.add_argument(
        "--keep-states",
        dest="keep_states",
        action="store_true",
        default=None,
        help="trials on the fused loop keep every step's state (archdsl train --keep-states): faster, "
        "for B x T states of memory a layer",
    )
    p.add_argument("--device", type=A.device, help="cuda or cpu (default: cuda when present)")
    p.add_argument("--align", type=A.positive_int, help="the solved width is a multiple of this (default 1)")
    p.add_argument("--seed", type=A.nonnegative_int, help="seed of the sampler and every trial (default 0)")
    p.add_argument(
        "--trial-timeout",
        dest="trial_timeout",
        type=A.positive_float,
        help="seconds after which a trial is killed (default 3x its budget + 10 min)",
    )
    p.add_argument(
        "--time-limit",
        dest="time_limit",
        type=A.positive_float,
        metavar="MINUTES",
        help="start no trial (or re-run) that would still train after this many minutes",
    )
    p.add_argument(
        "--tolerance",
        type=A.fraction,
        help="how far a trial's parameter count may be from the budget: 0.02 or 2%% (default 1%%)",
    )
    p.add_argument("--quiet", action="store_true", help="no live table")


def _pairs(items, flag: str) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ArchdslError(f"{flag} expects NAME=VALUE, found '{item}'")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def new_settings(args) -> st.Settings:
    from archdsl.lm.budget import parse_count

    if not args.budget:
        raise ArchdslError("--budget is required for a new study, e.g. --budget 100M")
    multi = [m.strip() for m in (args.multi or "").split(",") if m.strip()]
    for m in multi:
        if m not in st.MULTI:
            raise ArchdslError(f"unknown --multi objective '{m}'; choose from {', '.join(st.MULTI)}")
    if multi and args.sampler == "cmaes":
        raise ArchdslError("CMA-ES is single-objective; use the default TPE sampler with --multi")
    overrides = {k: v for k in ("heads", "n", "depth", "lr") if (v := getattr(args, k))}
    overrides.update(_pairs(args.space, "--space"))
    fixed = {k: number(v) for k, v in _pairs(args.set, "--set").items()}
    s = st.Settings(
        models=list(args.models) or [DEFAULT_MODEL],
        budget=parse_count(args.budget),
        minutes=args.minutes or 10.0,
        trials=args.trials or DEFAULT_TRIALS,
        overrides=overrides,
        fixed=fixed,
        data=[str(Path(d).resolve()) for d in args.data or []],
        val=str(Path(args.val).resolve()) if args.val else None,
    )
    for key in (
        "objective",
        "sampler",
        "batch",
        "seq",
        "eval_bytes",
        "backend",
        "products",
        "keep_states",
        "device",
        "align",
        "seed",
        "trial_timeout",
        "seeds",
        "top_k",
        "tolerance",
    ):
        if getattr(args, key) is not None:
            setattr(s, key, getattr(args, key))
    s.multi, s.prune = multi, not args.no_prune
    if on_cpu(s.device):  # the trainer's GPU defaults (32 x 512 bytes, 1 MB held out) take minutes a step
        for key, value in CPU_DEFAULTS.items():
            if getattr(args, key) is None:
                setattr(s, key, value)
    if s.trials < 1 or s.minutes <= 0 or s.budget < 1:
        raise ArchdslError("--trials, --minutes and --budget must be positive")
    space = Space(s.models, {k: parse_range(k, v) for k, v in overrides.items()}, fixed)  # errors now
    refuse_kernel_settings(s, space)  # before any trial
    region = feasible(space, s.budget, s.tolerance, s.align)
    if region.count() == 0 and not _depth_given(space, s):
        # the default depth suits budgets of millions; a small budget is met by shallower models
        s.overrides["depth"] = DEPTHS
        space = Space(s.models, {k: parse_range(k, v) for k, v in s.overrides.items()}, fixed)
        region = feasible(space, s.budget, s.tolerance, s.align)
        if region.count():
            print(
                f"archdsl search: no configuration meets {s.budget:,} parameters at depth {DEFAULT_DEPTH}; "
                f"searching depth {DEPTHS} (give --depth or --set depth=N to choose)",
                file=sys.stderr,
            )
    if region.count() == 0 and not any(r.unchecked for r in region.regions):
        raise ArchdslError(
            region.empty_message(),
            hint="raise --budget or --tolerance, or narrow the space (--heads, --depth, --set)",
        )
    return s


#: trial sizes on the CPU where not given: the reference cell runs step by step in Python, so that a
#: trial of 0.1 minutes (its warm-up steps and four held-out evaluations included) ends in minutes
CPU_DEFAULTS = {"batch": 8, "seq": 32, "eval_bytes": 4096}


def on_cpu(device: str | None) -> bool:
    if device is not None:
        return device == "cpu"
    import torch

    return not torch.cuda.is_available()


#: the depths searched when the default depth leaves no configuration at the budget
DEPTHS = f"2:{DEFAULT_DEPTH}"


def _depth_given(space: Space, s: st.Settings) -> bool:
    return "depth" in s.overrides or "depth" in s.fixed or any("depth" in ms.dims for ms in space.models)


def default_name(args) -> str:
    models = "+".join(Path(m).stem for m in (args.models or [DEFAULT_MODEL]))
    return f"{models}-{args.budget}" if args.budget else models


def open_study(args, runs: Path):
    """Create the study, or load it for --resume / --join (its stored settings apply)."""
    import optuna

    name = args.study or default_name(args)
    fresh = not (args.resume or args.join)
    settings = new_settings(args) if fresh else None  # a refused command leaves no study folder behind
    journal = Path(args.storage) if args.storage else st.journal_path(runs, name)
    if not fresh and not st.is_url(args.storage) and not journal.is_file():
        raise ArchdslError(f"no study '{name}' in {journal}")  # (opening it would create the file)
    storage = st.open_storage(name, args.storage, runs)
    exists = st.study_exists(name, storage)
    if args.resume or args.join:
        if not exists:
            raise ArchdslError(f"no study '{name}' in {args.storage or st.journal_path(runs, name)}")
        study = st.load(name, storage)
        settings = st.settings_of(study)
        _check_same(args, settings)
        if args.resume and args.trials:
            settings.trials = st.counts(study).finished + args.trials
        for key in ("seeds", "top_k"):
            if getattr(args, key) is not None:
                setattr(settings, key, getattr(args, key))
        if args.resume:
            study.set_user_attr(st.SETTINGS_ATTR, settings.to_attr())
        return study, settings, storage
    if exists:
        raise _exists(name, storage)
    try:
        return st.create(name, storage, settings), settings, storage
    except optuna.exceptions.DuplicatedStudyError:  # another search created it since we looked
        raise _exists(name, storage) from None


def _exists(name: str, storage) -> ArchdslError:
    """Why a new search cannot take the name of a study that exists (perhaps another search's, live)."""
    import optuna
    from optuna.trial import TrialState

    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    if running:
        return ArchdslError(
            f"study '{name}' is being searched now ({running} trial(s) running, {len(trials)} in all)",
            hint="pass --join to add this host's workers to it, or choose another --study",
        )
    return ArchdslError(
        f"study '{name}' already exists ({len(trials)} trials)",
        hint="pass --resume to continue it, or choose another --study",
    )


def _check_same(args, stored: st.Settings) -> None:
    """A continued study keeps its settings: flags that define it are accepted when they say what the
    study already has (its original command line), and refused, each named, when they differ."""
    given = [k for k in DEFINING if getattr(args, k, None) not in (None, [], False)]
    if args.join and args.trials:
        given.append("trials")  # the target is the study's
    if not given:
        return
    if args.budget is None:
        args = argparse.Namespace(**{**vars(args), "budget": str(stored.budget)})
    if args.trials is None:
        args = argparse.Namespace(**{**vars(args), "trials": stored.trials})
    ours = new_settings(args)
    differ = []
    for k in given:
        for field in FIELDS.get(k, (k,)):
            now, was = getattr(ours, field), getattr(stored, field)
            if isinstance(now, dict):  # only the names this command line gives
                now = {n: v for n, v in now.items() if n in _named(args, k)}
                was = {n: v for n, v in was.items() if n in now}
            if now != was:
                differ.append(f"--{k.replace('_', '-')} ({field}: the study has {was}, given {now})")
    if differ:
        raise ArchdslError(
            "a continued study keeps its settings; these flags differ from them: " + "; ".join(differ),
            hint="drop them (or give the study's own values), or start a new --study for something else",
        )


#: the Settings fields that a defining flag sets (the flag's own name where not listed)
FIELDS = {
    "no_prune": ("prune",),
    "heads": ("overrides",),
    "n": ("overrides",),
    "depth": ("overrides",),
    "lr": ("overrides",),
    "space": ("overrides",),
    "set": ("fixed",),
}


def _named(args, flag: str) -> set[str]:
    """The hyper names a range or --set flag names."""
    if flag in ("heads", "n", "depth", "lr"):
        return {flag}
    return set(_pairs(getattr(args, flag), "--" + flag))


def enqueue(study, settings: st.Settings, items) -> None:
    for item in items or []:
        params = {k: number(v) for k, v in _pairs(item.split(","), "--enqueue").items()}
        study.enqueue_trial(params, user_attrs={"enqueued": item})


def gpu_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    if text == "all":
        import torch

        if not torch.cuda.is_available():
            raise ArchdslError("--gpus all: torch sees no CUDA GPU", hint="use --workers N on the CPU")
        return [str(i) for i in range(torch.cuda.device_count())]
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or len(set(gpus)) != len(gpus):
        raise ArchdslError(f"--gpus '{text}': expected distinct ids such as 0,1,2,3 (or 'all')")
    return gpus


def recover(study, storage_url: str | None) -> None:
    """Journal storage has no heartbeat: trials left running by a search that died are retried."""
    if st.is_url(storage_url):
        return  # a database storage fails stale trials itself (heartbeats); other hosts may be running
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        st.fail_and_retry(study, t, "its worker stopped before the trial ended (retried)")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args) -> int:
    import optuna

    from .live import Progress
    from .pool import Pool
    from .report import write_report
    from .results import top_trials
    from .worker import build_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: stop the workers, their trials run on --resume
    if args.workers < 1:
        raise ArchdslError("--workers must be at least 1")
    gpus = gpu_list(args.gpus)
    runs = st.runs_dir(args.runs)
    study, settings, storage = open_study(args, runs)
    if args.resume:
        recover(study, args.storage)
    enqueue(study, settings, args.enqueue)
    # a joining host's workers draw other random numbers than the first host's (their index seeds them)
    first = random.randrange(1000, 1_000_000) if args.join else 0
    deadline = time.time() + 60 * args.time_limit if args.time_limit else None
    pool = Pool(study, args.storage, runs, gpus, args.workers, first, deadline)
    progress = Progress(study, settings, quiet=args.quiet)
    space = build_space(settings)
    region = feasible(space, settings.budget, settings.tolerance, settings.align)
    progress.header(space.describe(), len(pool.slots), region.describe())
    with progress:
        pool.run(progress.tick)
        if not args.join and settings.seeds > 0 and not settings.multi:
            top = top_trials(study, settings.top_k)
            progress.phase = f"re-training the top {len(top)} with {settings.seeds} more seed(s)"
            if not args.quiet and not progress.live:
                progress.console.print(progress.phase)
            pool.reseed(settings, top, progress.tick)
    if args.join:
        return 0
    where = args.storage or str(st.journal_path(runs, study.study_name))
    md, html = write_report(study, runs / study.study_name, where)
    progress.summary(md, html)
    return 0 if st.counts(study).complete else 1
