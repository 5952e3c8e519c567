"""Errors that point at the source: ``file:line:col``, the line, a caret, expected vs found.

Every user-facing failure of archdsl is an :class:`ArchdslError`; the CLI prints its message and
exits with status 2, so a user never sees a Python traceback for bad input.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A range of source text (1-based lines and columns, end exclusive)."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NO_SPAN = Span("<input>", 0, 0, 0, 0)


class ArchdslError(Exception):
    """A user error with an optional source location and an optional hint line."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None,
                 source: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint
        self.source = source

    def with_source(self, source: str) -> ArchdslError:
        if self.source is None:
            self.source = source
        return self

    def __str__(self) -> str:
        return format_error(self)


class ArchdslWarning(ArchdslError):
    """A diagnostic that does not stop compilation (printed as ``warning:``)."""


def format_error(err: ArchdslError, kind: str | None = None) -> str:
    kind = kind or ("warning" if isinstance(err, ArchdslWarning) else "error")
    span = err.span
    if span is None or span.line == 0:
        head = f"{kind}: {err.message}"
        return head + (f"\n  {err.hint}" if err.hint else "")
    out = [f"{span}: {kind}: {err.message}"]
    lines = err.source.splitlines() if err.source else []
    if 0 < span.line <= len(lines):
        text = lines[span.line - 1]
        out.append(f"    {text}")
        width = span.end_col - span.col if span.end_line == span.line else len(text) - span.col + 1
        out.append("    " + " " * (span.col - 1) + "^" * max(1, width))
    if err.hint:
        out.append(f"  {err.hint}")
    return "\n".join(out)


def did_you_mean(name: str, known: list[str] | set[str] | tuple[str, ...], what: str = "") -> str:
    """A hint line: the closest known names and the full list when it is short."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    parts = []
    if close:
        parts.append("did you mean " + " or ".join(f"'{c}'" for c in close) + "?")
    if known and len(known) <= 40:
        parts.append(f"known{(' ' + what) if what else ''}: " + ", ".join(known))
    return " ".join(parts) if parts else ""
