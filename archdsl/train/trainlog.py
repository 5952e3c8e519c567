"""A run's outputs while it trains: greppable JSONL lines and a live progress bar.

Every line of ``<out>/log.jsonl`` is one JSON object whose first key is ``event`` (``start``,
``step``, ``eval``, ``report``, ``checkpoint``, ``resume``, ``nonfinite``, ``end``), so
``grep '"event": "eval"' runs/*/log.jsonl`` finds every held-out number.

Both files are strict JSON: a non-finite number (a diverged loss) is written as the string ``"NaN"``,
``"Infinity"`` or ``"-Infinity"``, never as a bare ``NaN`` that other JSON readers reject;
:func:`loads` reads those strings back as floats.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

PLAIN_EVERY_S = 10.0  # without a terminal, print a plain status line at most this often
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _finite(x):
    """``x`` with every non-finite float replaced by its name (tuples become lists, as JSON has them)."""
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def dumps(obj, **kw) -> str:
    """Strict JSON (non-finite numbers as strings; other objects as ``str``)."""
    return json.dumps(_finite(obj), allow_nan=False, default=str, **kw)


def _back(x):
    if isinstance(x, str):
        return NONFINITE.get(x, x)
    if isinstance(x, dict):
        return {k: _back(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_back(v) for v in x]
    return x


def loads(text: str | bytes):
    """Read what :func:`dumps` wrote (``"NaN"``, ``"Infinity"``, ``"-Infinity"`` become floats)."""
    return _back(json.loads(text))


class RunLog:
    """Appends events to ``log.jsonl``; shows progress on a terminal (rich) or as plain lines."""

    def __init__(self, path: Path | None, progress: bool, append: bool = False):
        self.file = open(path, "a" if append else "w") if path is not None else None  # noqa: SIM115
        self.progress = progress
        self.sinks = None  # archdsl.train.sinks.Sinks: metrics also sent to csv / TensorBoard / W&B
        self.bar = None
        self.last_plain = 0.0
        if progress and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(stderr=True),
                transient=False,
            )
            self.task = self.bar.add_task("train", total=1.0, status="")
            self.bar.start()

    def event(self, event: str, **fields) -> None:
        if self.sinks is not None:
            self.sinks.event(event, fields)
        if self.file is None:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self.file.write(dumps(record) + "\n")
        self.file.flush()

    def update(self, fraction: float, step: int, loss: float, tokens_per_s: float) -> None:
        status = f"step {step:,}  loss {loss:.4f}  {tokens_per_s:,.0f} tok/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=min(fraction, 1.0), status=status)
        elif self.progress and time.monotonic() - self.last_plain >= PLAIN_EVERY_S:
            self.last_plain = time.monotonic()
            print(f"train {100 * min(fraction, 1.0):5.1f}%  {status}", file=sys.stderr, flush=True)

    def say(self, text: str) -> None:
        """A line for the user (above the bar when there is one); silent when progress is off."""
        if self.bar is not None:
            self.bar.console.print(text)
        elif self.progress:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.sinks is not None:
            self.sinks.close()
            self.sinks = None
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        if self.file is not None:
            self.file.close()
            self.file = None
