"""A study's settings, storage, sampler and pruner.

The settings of a search live in the study itself (a user attribute), so that every worker, a
``--resume``, a worker on another host and ``archdsl report`` read the same ones. The default storage
is Optuna's journal file under ``runs/<study>/`` (several processes, nothing to install); a database
URL (``postgresql://…``) uses Optuna's RDB storage with heartbeats, so a trial whose worker died is
failed by the next worker that starts a trial and queued again with the same parameters.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from archdsl.errors import ArchdslError

try:
    import optuna
    from optuna.trial import TrialState
except ImportError:  # archdsl's core does not need it
    raise ArchdslError("the search needs Optuna: pip install 'archdsl[search]'") from None

SETTINGS_ATTR = "archdsl"
JOURNAL = "study.journal"
HEARTBEAT_S = 10  # seconds between heartbeats of a running trial (RDB storage; $ARCHDSL_HEARTBEAT_S)
GRACE_S = 60  # a running trial without a heartbeat this long is failed and retried ($ARCHDSL_GRACE_S)
MAX_RETRY = 3
#: the second objective of a multi-objective study and its direction
MULTI = {"tokens_per_s": "maximize", "state": "minimize"}
OBJECTIVES = ("bpb", "loss")


@dataclass
class Settings:
    """What a study searches and how each trial trains (stored in the study)."""

    models: list[str]
    budget: int  # parameter budget: the width of every trial is solved to it
    minutes: float  # training budget of one trial (the clock starts after compile and warm-up)
    trials: int  # the study's target: trials that ended (complete, pruned or failed with a reason)
    tolerance: float = 0.01  # a trial whose exact count is further from the budget is rejected
    align: int = 1  # width multiple for the budget solver
    objective: str = "bpb"  # "bpb": held-out bits per byte; "loss": last-100 training loss
    multi: list[str] = field(default_factory=list)  # second objectives (Pareto front)
    sampler: str = "tpe"  # "tpe" or "cmaes"
    prune: bool = True  # median pruning on held-out bpb (single-objective only)
    report_fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    overrides: dict[str, str] = field(default_factory=dict)  # name -> range text (--heads 4:64 …)
    fixed: dict[str, object] = field(default_factory=dict)  # --set name=value
    data: list[str] = field(default_factory=list)  # training files ([] -> the trainer's default)
    val: str | None = None  # held-out file (None -> the tail of the training stream)
    batch: int | None = None  # None -> the trainer's default
    seq: int | None = None
    eval_bytes: int | None = None
    backend: str = "reference"  # cell backend of spec models: "reference" | "triton"
    products: str | None = None  # the chunked kernels' products (archdsl train --products); None: tf32
    keep_states: bool = False  # the fused loop keeps every state (archdsl train --keep-states)
    device: str | None = None  # None -> the trainer picks (cuda when present)
    seed: int = 0  # seed of every trial's model; with (study, worker, start) it seeds each sampler
    seeds: int = 2  # extra seeds for the top-k re-runs (0: none)
    top_k: int = 3
    trial_timeout: float | None = None  # seconds; None -> 3x the budget + 10 minutes

    def to_attr(self) -> dict:
        return asdict(self)

    @classmethod
    def from_attr(cls, attr: dict) -> Settings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in attr.items() if k in known})

    def directions(self) -> list[str]:
        return ["minimize"] + [MULTI[m] for m in self.multi]

    def timeout_s(self) -> float:
        return self.trial_timeout or 3 * self.minutes * 60 + 600


# ---- storage --------------------------------------------------------------------------------------
def is_url(storage: str | None) -> bool:
    return bool(storage) and "://" in storage


def _driver_url(url: str) -> str:
    """``postgresql://`` means psycopg2 to SQLAlchemy; use psycopg 3 when that is what is installed."""
    if url.startswith("postgresql://"):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def journal_path(runs: Path, study: str) -> Path:
    return runs / study / JOURNAL


def _retry_callback() -> dict:
    """Queue a trial whose heartbeat stopped again (Optuna >= 4.9 names; the older ones before)."""
    try:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        return {"heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)}
    except ImportError:
        from optuna.storages import RetryFailedTrialCallback

        return {"failed_trial_callback": RetryFailedTrialCallback(max_retry=MAX_RETRY)}


def open_storage(study: str, storage: str | None, runs: Path):
    """The journal file under ``runs/<study>/`` (or a given journal path), or an RDB storage URL."""
    if is_url(storage):
        from optuna.storages import RDBStorage

        try:
            return RDBStorage(
                _driver_url(storage),
                heartbeat_interval=int(os.environ.get("ARCHDSL_HEARTBEAT_S", HEARTBEAT_S)),
                grace_period=int(os.environ.get("ARCHDSL_GRACE_S", GRACE_S)),
                engine_kwargs={"pool_pre_ping": True},
                **_retry_callback(),
            )
        except ImportError as e:
            raise ArchdslError(
                f"storage {hide_password(storage)}: {e}",
                hint="pip install 'archdsl[search]' (psycopg for PostgreSQL)",
            ) from None
        except Exception as e:  # SQLAlchemy's connection errors: say which URL and why, briefly
            raise ArchdslError(
                f"cannot open storage {hide_password(storage)}: {str(e).splitlines()[0]}"
            ) from None
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(storage) if storage else journal_path(runs, study)
    check_journal(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as e:
        raise ArchdslError(f"cannot open the study journal {path}: {e.strerror or e}") from None


def check_journal(path: Path) -> None:
    """An existing journal must be one: every line of Optuna's journal is a JSON object with an
    ``op_code`` (reading anything else fails deep inside Optuna)."""
    if path.is_dir():
        raise ArchdslError(f"{path} is a directory, not a study journal")
    if not path.exists():
        return
    try:
        with open(path, "rb") as f:
            first = f.readline()
    except OSError as e:
        raise ArchdslError(f"cannot read the study journal {path}: {e.strerror or e}") from None
    if not first:
        return  # an empty journal is a new one
    try:
        ok = "op_code" in json.loads(first)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise ArchdslError(f"{path} is not a study journal (its first line is not an Optuna journal entry)")


def hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: show it as given
        return url


def study_exists(name: str, storage) -> bool:
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    return any(s.study_name == name for s in summaries)


def settings_of(study: optuna.Study) -> Settings:
    attr = study.user_attrs.get(SETTINGS_ATTR)
    if attr is None:
        raise ArchdslError(f"study '{study.study_name}' was not made by archdsl search (no settings stored)")
    return Settings.from_attr(attr)


# ---- sampler and pruner ---------------------------------------------------------------------------
def sampler_seed(settings: Settings, study: str, worker: int, start: int) -> int:
    """The seed of one start of one worker: a function of (study, worker, start), so that a worker
    restarted, a ``--resume`` and a joining host never draw again the numbers an earlier start drew.
    ``start``: the number of trials the study held when the worker started."""
    key = f"{settings.seed}:{study}:{worker}:{start}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


def make_sampler(settings: Settings, worker: int = 0, study: str = "", start: int = 0):
    """TPE (multivariate, grouped for conditional spaces, a constant liar for parallel workers) or CMA-ES."""
    seed = sampler_seed(settings, study, worker, start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings.sampler == "cmaes":
            # CMA-ES samples the numeric dimensions jointly; categoricals fall back to random sampling
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        if settings.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    raise ArchdslError(f"unknown sampler '{settings.sampler}'; choose tpe or cmaes")


def make_pruner(settings: Settings):
    if settings.prune and not settings.multi and settings.report_fractions:
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def load(name: str, storage, settings: Settings | None = None, worker: int = 0) -> optuna.Study:
    """Load a study with the sampler and pruner its settings ask for."""
    study = optuna.load_study(study_name=name, storage=storage)
    settings = settings or settings_of(study)
    start = len(study.get_trials(deepcopy=False))
    return optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(settings, worker, name, start),
        pruner=make_pruner(settings),
    )


def create(name: str, storage, settings: Settings) -> optuna.Study:
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=settings.directions(),
        sampler=make_sampler(settings, study=name),
        pruner=make_pruner(settings),
    )
    study.set_user_attr(SETTINGS_ATTR, settings.to_attr())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(metric_names(settings))  # optuna-dashboard labels its axes with them
    return study


def metric_names(settings: Settings) -> list[str]:
    first = "held-out bpb" if settings.objective == "bpb" else "last-100 training loss"
    return [first, *settings.multi]


# ---- progress -------------------------------------------------------------------------------------
STALE_ATTR = "stale"  # set on a trial failed because its worker died (it is retried, so not counted)


@dataclass
class Counts:
    finished: int = 0  # complete + pruned + failed with a reason
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0


def counts(study: optuna.Study) -> Counts:
    c = Counts()
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            c.complete += 1
        elif t.state == TrialState.PRUNED:
            c.pruned += 1
        elif t.state == TrialState.FAIL and is_counted_failure(t):
            c.failed += 1
        elif t.state == TrialState.RUNNING:
            c.running += 1
        elif t.state == TrialState.WAITING:
            c.waiting += 1
    c.finished = c.complete + c.pruned + c.failed
    return c


def is_counted_failure(t) -> bool:
    """A trial that failed on its own (a reason recorded), not one whose worker died under it."""
    return "fail_reason" in t.user_attrs and not t.user_attrs.get(STALE_ATTR)


def fail_and_retry(study: optuna.Study, trial, reason: str) -> None:
    """Fail a trial left running by a dead worker and queue its parameters again."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        storage.set_trial_user_attr(trial._trial_id, STALE_ATTR, True)
        if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    if trial.params:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def runs_dir(out: str | None) -> Path:
    return Path(out or "runs")
