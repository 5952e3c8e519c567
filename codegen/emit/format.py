"""Every generated module is run through ruff's formatter before it is written, so that it reads like
the project's own code (and like fla's hand-written kernels) however the emitters lay out its lines.

The formatter runs isolated (no ``pyproject.toml`` or ``ruff.toml`` of the user's is read) at the
project's line length, so the same spec gives the same text, and the same cache key, on every machine.
It also checks the text: ruff refuses what is not valid Python, which can only be an emitter's bug.
"""

from __future__ import annotations

import functools
import subprocess

from ruff.__main__ import find_ruff_bin

LINE_LENGTH = 110  # as the project's own code ([tool.ruff] in pyproject.toml)


class EmitError(RuntimeError):
    """archdsl wrote a module that is not valid Python: an internal error, never the user's."""


@functools.cache
def _ruff() -> str:
    return find_ruff_bin()


def format_source(src: str, spec: str = "<module>") -> str:
    """``src`` as ``ruff format`` writes it; ``spec`` names the spec the module was generated for."""
    cmd = [_ruff(), "format", "--isolated", f"--line-length={LINE_LENGTH}"]
    cmd += ["--stdin-filename", "kernel.py", "-"]
    done = subprocess.run(cmd, input=src, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        why = next((line for line in done.stderr.splitlines() if line.strip()), "no message")
        raise EmitError(
            f"internal error: the module generated for spec {spec!r} is not valid Python "
            f"(ruff format: {why}); please report it with the spec"
        )
    return done.stdout
