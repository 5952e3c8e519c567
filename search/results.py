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


@dataclass
class SeedStats:
    values: list[float]  # the trial's own value first, then its re-runs'
    failed: list[str]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else float("nan")

    def text(self) -> str:
        if self.n < 2:
            return f"{self.mean:.4f} (1 seed)"
        return f"{self.mean:.4f} ± {self.std:.4f} ({self.n} seeds)"


def seed_stats(study: optuna.Study, t: FrozenTrial) -> SeedStats:
    values, failed = [t.values[0]], []
    prefix = f"seed_run:{t.number}:"
    for key, rec in sorted(study.user_attrs.items()):
        if not key.startswith(prefix):
            continue
        if rec.get("status") == "ok" and rec.get("values"):
            values.append(rec["values"][0])
        else:
            failed.append(f"seed {rec.get('seed')}: {rec.get('reason')}")
    return SeedStats(values, failed)


def verdict(stats: list[tuple[FrozenTrial, SeedStats]]) -> str:
    """Does the winner (best mean over seeds) lead the runner-up by more than the seed noise?

    The lead counts when it exceeds two standard errors of the difference of the two means,
    ``2·sqrt(s1²/n1 + s2²/n2)``."""
    ranked = sorted(stats, key=lambda ts: ts[1].mean)
    if len(ranked) < 2:
        return "Only one configuration finished; there is nothing to compare it with."
    (w, ws), (r, rs) = ranked[0], ranked[1]
    lead = rs.mean - ws.mean
    if ws.n < 2 or rs.n < 2:
        return (
            f"Trial {w.number} leads trial {r.number} by {lead:.4f}, but without re-runs over seeds the "
            f"noise is unknown (run with --seeds 2 or more)."
        )
    noise = 2 * math.sqrt(ws.std**2 / ws.n + rs.std**2 / rs.n)
    if lead > noise:
        return (
            f"Trial {w.number} wins: its lead of {lead:.4f} over trial {r.number} exceeds the seed noise "
            f"(2 standard errors of the difference: {noise:.4f})."
        )
    return (
        f"Trial {w.number} has the best mean, but its lead of {lead:.4f} over trial {r.number} is within "
        f"the seed noise (2 standard errors of the difference: {noise:.4f}): the two are not "
        f"distinguishable at this budget."
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
