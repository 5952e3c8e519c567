"""The report's figures as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MULTI_LABEL = {
    "tokens_per_s": "tokens / s (higher is better)",
    "state": "state floats per sequence (lower is better)",
}


def _png(fig) -> bytes:
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():  # Optuna's slice plot has axes tight_layout cannot lay out exactly
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def curves(trials: list, objective: str) -> bytes | None:
    """Training loss against training seconds for each given trial (its recorded ``curve``)."""
    drawn = [t for t in trials if t.user_attrs.get("curve")]
    if not drawn:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in drawn:
        pts = t.user_attrs["curve"]  # [(seconds, step, loss)]
        value = f", {objective} {t.values[0]:.4f}" if t.values else ""
        # a marker on every point of a short curve: a curve of one point is otherwise not drawn at all
        marker = "o" if len(pts) < 20 else None
        ax.plot(
            [p[0] for p in pts], [p[2] for p in pts], marker=marker, ms=4, label=f"trial {t.number}{value}"
        )
    ax.set_xlabel("training seconds")
    ax.set_ylabel("training loss (nats / byte)")
    ax.set_title("Loss against time, best trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def history(trials: list, objective: str) -> bytes | None:
    """Each complete trial's value by trial number, and the best so far."""
    done = sorted((t for t in trials if t.values), key=lambda t: t.number)
    if not done:
        return None
    xs, ys = [t.number for t in done], [t.values[0] for t in done]
    best = [min(ys[: i + 1]) for i in range(len(ys))]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.scatter(xs, ys, s=18, label="trial")
    ax.step(xs, best, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def pareto(trials: list, front: list, objective: str, second: str, k: int = 1) -> bytes | None:
    """All complete trials, the first objective against objective ``k``; the Pareto front in red
    (joined by a line only when these two are all the objectives: otherwise it is a front in more
    dimensions than the plot shows)."""
    done = [t for t in trials if t.values and len(t.values) > k]
    if not done:
        return None
    on = {t.number for t in front}
    fig, ax = plt.subplots(figsize=(7, 4))
    rest = [t for t in done if t.number not in on]
    ax.scatter([t.values[k] for t in rest], [t.values[0] for t in rest], s=18, c="0.6", label="trial")
    best = sorted((t for t in done if t.number in on), key=lambda t: t.values[k])
    style = "o-" if len(done[0].values) == 2 else "o"
    ax.plot([t.values[k] for t in best], [t.values[0] for t in best], style, c="C3", label="Pareto front")
    for t in best:
        ax.annotate(
            str(t.number), (t.values[k], t.values[0]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    ax.set_xlabel(MULTI_LABEL.get(second, second))
    ax.set_ylabel(f"{objective} (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def importances(values: dict[str, float]) -> bytes | None:
    if not values:
        return None
    names = list(values)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    ax.barh(names, [values[n] for n in names], color="C0")
    ax.set_xlabel("importance (PED-ANOVA, normalised)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _optuna_png(plot, study, **kw) -> bytes | None:
    """An ``optuna.visualization.matplotlib`` figure as PNG (None where it draws nothing)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
        try:
            ax = plot(study, **kw)
        except (ValueError, RuntimeError, ImportError):
            return None
    axes = ax.ravel() if hasattr(ax, "ravel") else [ax]
    fig = axes[0].figure
    if not any(a.has_data() for a in axes):
        plt.close(fig)
        return None
    fig.set_size_inches(max(7, 2.6 * len(axes)), 4) if len(axes) > 1 else fig.set_size_inches(7, 4)
    return _png(fig)


def slices(study, objective: str, params: list[str]) -> bytes | None:
    """Optuna's slice plot: the objective against each searched parameter, one panel each."""
    from optuna.visualization.matplotlib import plot_slice

    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    return _optuna_png(plot_slice, study, params=params, target=target, target_name=objective)


def parallel(study, objective: str, params: list[str]) -> bytes | None:
    """Optuna's parallel-coordinate plot of the complete trials."""
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    if len(params) < 2:
        return None
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    return _optuna_png(plot_parallel_coordinate, study, params=params, target=target, target_name=objective)
