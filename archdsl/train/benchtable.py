"""``archdsl bench``'s results: one row per run (raw values), the Markdown table, the JSON document
and the loss plot, and, with ``--modes``, each model's row at its best mode."""

from __future__ import annotations

import dataclasses
import datetime
import shlex
from pathlib import Path

from archdsl.lm import budget
from archdsl.train import trainlog
from archdsl.train.config import step_settings


@dataclasses.dataclass
class Entry:
    """A model to run: its row's name, its solved config (None when it cannot run, and why)."""

    label: str  # the row's name: the MODEL argument as given (and, with --modes, the mode)
    cfg: object  # ModelConfig (solved when --params is given)
    error: str = ""  # why it cannot run (an unknown name, an impossible budget)
    model: str = ""  # the MODEL argument as given


COLUMNS = (
    "Model",
    "Params",
    "Last100 loss",
    "held-out bpb",
    "tokens/s",
    "Settings",
    "Dim",
    "Depth",
    "Expansion",
    "Steps",
    "Heads",
    "n_state",
    "State/layer",
    "peak memory",
    "reserved",
    "Status",
)


def row(entry: Entry, result: dict | None, planned: str | None = None) -> dict:
    """One table row (raw values; None where unknown). ``settings``: how the step ran, as the run's
    config says, else as ``planned``."""
    s = budget.sizes(entry.cfg) if entry.cfg is not None else None
    info = (result or {}).get("info") or {}

    def pick(key, sizes_key=None):
        v = info.get(key)
        return v if v is not None else (getattr(s, sizes_key or key) if s else None)

    r = result or {}
    status = r.get("status", "failed") if entry.error == "" else "failed"
    reason = entry.error or (r.get("message") or "")
    ran = r.get("config") or {}
    if "compile" in ran:
        planned = step_settings(
            ran["compile"], ran.get("compile_mode", "default"), ran.get("compile_backend", "inductor")
        )
    return {
        "model": entry.label,
        "params": r.get("params") or (s.params if s else None),
        "last100_loss": r.get("last100_loss"),
        "val_bpb": r.get("val_bpb"),
        "tokens_per_s": r.get("tokens_per_s"),
        "settings": planned,
        "dim": pick("dim"),
        "depth": pick("depth"),
        "expansion": pick("expansion"),
        "steps": r.get("steps"),
        "heads": pick("heads"),
        "n_state": pick("n_state"),
        "state_per_layer": pick("state_per_layer"),
        "peak_mem_bytes": r.get("peak_mem_bytes"),
        "peak_reserved_bytes": r.get("peak_reserved_bytes"),
        "status": status,
        "reason": reason,
        "backend": info.get("backend"),
    }


def _si(v, digits=2) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.{digits}f}{unit}"
    return f"{v:.0f}" if isinstance(v, float) else str(v)


def cells(r: dict) -> list[str]:
    def fmt(v, f):
        return "-" if v is None else f(v)

    status = r["status"] + (f": {r['reason']}" if r["reason"] else "")
    return [
        r["model"],
        fmt(r["params"], _si),
        fmt(r["last100_loss"], "{:.4f}".format),
        fmt(r["val_bpb"], "{:.4f}".format),
        fmt(r["tokens_per_s"], lambda v: _si(v, 1)),
        r.get("settings") or "-",
        fmt(r["dim"], str),
        fmt(r["depth"], str),
        fmt(r["expansion"], "{:g}".format),
        fmt(r["steps"], str),
        fmt(r["heads"], str),
        fmt(r["n_state"], str),
        fmt(r["state_per_layer"], "{:,}".format),
        fmt(r["peak_mem_bytes"], lambda v: f"{v / 2**30:.1f} GiB"),
        fmt(r["peak_reserved_bytes"], lambda v: f"{v / 2**30:.1f} GiB"),
        status.replace("|", "/").replace("\n", " "),
    ]


def markdown(rows: list[dict], title: str) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _amount(args) -> str:
    if args.minutes:
        return f"{args.minutes:g} min"
    return (
        f"{args.steps} steps" if args.steps else f"{args.tokens} tokens" if args.tokens else "default budget"
    )


def best_rows(rows: list[dict], runs: list[tuple[Entry, object]], todo: list[Entry]) -> list[dict]:
    """Each model's row at its best working mode: the most tokens/s among its runs that finished
    (its first row when none did)."""
    best = []
    for e in todo:
        mine = [r for r, (run, _) in zip(rows, runs) if run.model == e.label]
        ok = [r for r in mine if r["status"] == "ok" and r["tokens_per_s"] is not None]
        if mine:
            best.append({**(max(ok, key=lambda r: r["tokens_per_s"]) if ok else mine[0]), "model": e.label})
    return best


def write_results(out: Path, rows, results, args, argv, best=None) -> None:
    from archdsl.train.plots import plot_loss

    title = f"archdsl bench: {args.params or 'preset sizes'}, {_amount(args)} per model"
    text = markdown(rows, title)
    if best is not None:
        text += "\n" + markdown(best, "Each model at its best mode").replace("# ", "## ", 1)
    (out / "results.md").write_text(text + f"\n`{shlex.join(argv)}`\n")
    doc = {
        "command": argv,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": {k: v for k, v in vars(args).items() if k != "models"},
        "rows": rows,
        "runs": results,
    }
    if best is not None:
        doc["best"] = best
    (out / "results.json").write_text(trainlog.dumps(doc, indent=1))
    curves = {r["model"]: results[r["model"]].get("curve") or [] for r in rows if r["model"] in results}
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # an optional extra: pip install 'archdsl[plots]'
        return
    plot_loss(curves, out / "loss_vs_time.png", title)
