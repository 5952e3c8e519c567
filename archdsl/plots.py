"""Plots of bench results (matplotlib, the Agg backend: no display needed)."""

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
            ax.plot([t for t, _ in pts], smooth([v for _, v in pts]), label=label, linewidth=1.5)
    ax.set_xlabel("training seconds (timed steps)")
    ax.set_ylabel("training loss (nats per byte)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
