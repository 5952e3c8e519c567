"""One line on stderr per slow phase of a first call: generating a new module (Triton then compiles
its kernels on their first launch) and timing launch plans. Printed where stderr is a terminal;
``ARCHDSL_PROGRESS=1`` prints them anywhere (logs), ``ARCHDSL_PROGRESS=0`` nowhere."""

from __future__ import annotations

import contextlib
import os
import sys

_quiet = 0  # depth of ``quiet()`` blocks


def enabled() -> bool:
    setting = os.environ.get("ARCHDSL_PROGRESS", "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    return sys.stderr.isatty()


def progress(message: str) -> None:
    """``archdsl: <message>`` on stderr, unless quiet."""
    if not _quiet and enabled():
        print(f"archdsl: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet():
    """No lines inside (a phase whose own line already covers what it does, as tuning's does)."""
    global _quiet
    _quiet += 1
    try:
        yield
    finally:
        _quiet -= 1
