"""Plots of runs and bench results (matplotlib, the Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path


def smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average, debiased (the curve points are already means over log_every steps)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def plot_loss(curves: dict[str, list], path: Path, title: str) -> None:
    """Training loss against timed seconds, one line per model; ``curves[label] = [(s, step, loss)]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for label, curve in curves.items():
        pts = [(float(t), float(loss)) for t, _, loss in curve if loss == loss]  # drop NaN points
        if pts:
            marker = "o" if len(pts) < 20 else None  # a curve of one point is otherwise invisible
            xs, ys = [t for t, _ in pts], smooth([v for _, v in pts])
            ax.plot(xs, ys, label=label, linewidth=1.5, marker=marker, ms=3)
    ax.set_xlabel("training seconds (timed steps)")
    ax.set_ylabel("training loss (nats per byte)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


LOSS_PLOT = "loss.png"


def run_loss_plot(out: Path, curve: list, label: str) -> Path | None:
    """``loss.png`` in a run folder: its training loss against timed seconds (None: nothing to draw,
    or matplotlib is not installed, ``pip install 'archdsl[plots]'``)."""
    pts = [p for p in curve if p[2] == p[2]]
    if not pts:
        return None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    path = Path(out) / LOSS_PLOT
    plot_loss({label: pts}, path, f"{label}: training loss")
    return path
