"""What a study found, read from its storage: trial rows, the best trials, seed statistics, the verdict."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import study as st

STATE = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


def searched(t: FrozenTrial) -> str:
    """The trial's sampled parameters, compactly (``heads=8 n=32 depth=12``)."""
    parts = []
    for k, v in t.params.items():
        if k == "model":
            continue
        parts.append(f"{k.split('.')[-1]}={fmt(v)}")
    return " ".join(parts)


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4g}"
    return str(v)


def model_of(t: FrozenTrial, settings: st.Settings | None = None) -> str:
    if "model" in t.params:
        return t.params["model"]
    if "model_config" in t.user_attrs:
        return t.user_attrs["model_config"]["model"]
    return settings.models[0] if settings and len(settings.models) == 1 else ""


def count_text(t: FrozenTrial, budget: int) -> str:
    p = t.user_attrs.get("params")
    return f"{p:,} ({(p - budget) / budget:+.2%})" if p else "-"


def rows(trials: list[FrozenTrial], settings: st.Settings) -> list[dict]:
    """The lines of the trial tables (live and report), one per trial."""
    retried = {t.system_attrs.get("failed_trial", t.user_attrs.get("retry_of")) for t in trials}
    return [row(t, settings, t.number in retried) for t in trials]


def row(t: FrozenTrial, settings: st.Settings, retried: bool = False) -> dict:
    """One line of the trial tables; ``retried``: its parameters were queued again."""
    ua = t.user_attrs
    value = t.values[0] if t.values else None
    if t.state == TrialState.PRUNED and t.intermediate_values:
        step, v = max(t.intermediate_values.items())
        note = f"pruned at {step}% ({v:.4f} bpb)"
    elif t.state == TrialState.FAIL:
        note = ua.get("fail_reason") or ("its heartbeat stopped (its worker died)" if retried else "failed")
    else:
        note = ""
    seconds = (
        (t.datetime_complete - t.datetime_start).total_seconds()
        if t.datetime_complete and t.datetime_start
        else None
    )
    state = STATE.get(t.state, str(t.state))
    if t.state == TrialState.FAIL and retried:
        state = "retried"  # its worker died or the search was stopped: the same parameters run again
    return {
        "number": t.number,
        "state": state,
        "model": model_of(t, settings),
        "searched": searched(t),
        "dim": ua.get("dim"),
        "params": count_text(t, settings.budget),
        "value": value,
        "tokens_per_s": ua.get("tokens_per_s"),
        "state_floats": ua.get("state"),
        "seconds": seconds,
        "note": note,
    }


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values and all(map(math.isfinite, t.values))
    ]


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The k best complete trials by the first objective (the Pareto front for a multi-objective study)."""
    done = completed(study)
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.values[0])
    return sorted(done, key=lambda t: t.values[0])[:k]


#: the one-sided confidence at which a lead over the runner-up counts (Welch's t-test)
CONFIDENCE = 0.95


@dataclass
class SeedStats:
    """A configuration's values over the seeds of its re-runs. The trial's own search score is kept
    apart (``search``): it is the minimum of many noisy draws, so it is biased low, and counting it
    would favour the winner of the search."""

    values: list[float]  # the re-runs' values (other seeds than the search's)
    failed: list[str]
    search: float | None = None  # the value the trial reached in the search

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else (self.search or float("nan"))

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else float("nan")

    def text(self) -> str:
        if self.n == 0:
            return "no re-runs"
        if self.n < 2:
            return f"{self.mean:.4f} (1 seed)"
        return f"{self.mean:.4f} ± {self.std:.4f} ({self.n} seeds)"


def seed_stats(study: optuna.Study, t: FrozenTrial) -> SeedStats:
    values, failed = [], []
    prefix = f"seed_run:{t.number}:"
    for key, rec in sorted(study.user_attrs.items()):
        if not key.startswith(prefix):
            continue
        if rec.get("status") == "ok" and rec.get("values"):
            values.append(rec["values"][0])
        else:
            failed.append(f"seed {rec.get('seed')}: {rec.get('reason')}")
    return SeedStats(values, failed, t.values[0] if t.values else None)


def welch(a: SeedStats, b: SeedStats) -> tuple[float, float, float]:
    """(standard error of the difference of the means, Welch–Satterthwaite degrees of freedom,
    the one-sided t quantile at CONFIDENCE for them)."""
    from scipy.stats import t as student

    va, vb = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va**2 / (a.n - 1)) + (vb**2 / (b.n - 1))) if va + vb > 0 else a.n + b.n - 2
    return se, df, float(student.ppf(CONFIDENCE, df))


def verdict(stats: list[tuple[FrozenTrial, SeedStats]]) -> str:
    """Does the winner (best mean over its re-runs) lead the runner-up by more than the seed noise?

    Welch's one-sided t-test on the re-runs' values only (the search's own scores are left out): the
    lead counts when it exceeds ``t(0.95, df)`` standard errors of the difference of the two means."""
    ranked = sorted(stats, key=lambda ts: ts[1].mean)
    if len(ranked) < 2:
        return "Only one configuration finished; there is nothing to compare it with."
    (w, ws), (r, rs) = ranked[0], ranked[1]
    lead = rs.mean - ws.mean
    if ws.n < 2 or rs.n < 2:
        return (
            f"Trial {w.number} leads trial {r.number} by {lead:.4f}, but with fewer than 2 re-runs over "
            f"other seeds each the noise is unknown (the search's own scores are not counted: they are "
            f"biased toward the winner); run with --seeds 2 or more."
        )
    se, df, q = welch(ws, rs)
    noise = (
        f"{q:.2f} standard errors of the difference, {q * se:.4f}, Welch's t at {CONFIDENCE:.0%}, {df:.1f} df"
    )
    if lead > q * se:
        return (
            f"Trial {w.number} wins: its lead of {lead:.4f} over trial {r.number} exceeds the seed noise "
            f"({noise})."
        )
    return (
        f"Trial {w.number} has the best mean over re-runs, but its lead of {lead:.4f} over trial {r.number} "
        f"is within the seed noise ({noise}): the two are not distinguishable at this budget."
    )


def importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """Optuna's parameter importances, or why there are none (too few trials, one value only, …)."""
    done = completed(study)
    if len(done) < 3:
        return {}, f"needs at least 3 complete trials (has {len(done)})"
    varied = {k for t in done for k in t.params if len({str(u.params.get(k)) for u in done}) > 1}
    if not varied:
        return {}, "no searched parameter took more than one value"
    try:
        target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()  # needs no scikit-learn
        imp = optuna.importance.get_param_importances(
            study, evaluator=evaluator, target=target, params=sorted(varied)
        )
        return imp, ""
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        return {}, f"could not be computed: {e}"
