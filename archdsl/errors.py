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

    def __init__(
        self, message: str, span: Span | None = None, hint: str | None = None, source: str | None = None
    ):
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
    hint = [f"  {line}" for line in err.hint.splitlines()] if err.hint else []
    if span is None or span.line == 0:
        return "\n".join([f"{kind}: {err.message}", *hint])
    out = [f"{span}: {kind}: {err.message}"]
    lines = err.source.splitlines() if err.source else []
    if 0 < span.line <= len(lines):
        text = lines[span.line - 1]
        out.append(f"    {text}")
        width = span.end_col - span.col if span.end_line == span.line else len(text) - span.col + 1
        pad = "".join(c if c == "\t" else " " for c in text[: span.col - 1])  # tabs keep the caret aligned
        out.append("    " + pad + "^" * max(1, width))
    return "\n".join(out + hint)


def add_note(err: ArchdslError, note: str) -> ArchdslError:
    """Append a line of context ("while checking preset 'big'") to an error's hint."""
    err.hint = f"{err.hint}\n{note}" if err.hint else note
    return err


def fmt(value: float | int) -> str:
    """A compile-time number as a person writes it: 8, 2.66667, 0.001, 1e+12."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def plural(n: int, word: str) -> str:
    """'1 axis', '2 axes', '1 argument', '3 arguments'."""
    plurals = {"axis": "axes"}
    return f"{n} {word if n == 1 else plurals.get(word, word + 's')}"


def did_you_mean(name: str, known: list[str] | set[str] | tuple[str, ...], what: str = "") -> str:
    """A hint line: the closest known names and the full list when it is short."""
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    parts = []
    if close:
        parts.append("did you mean " + " or ".join(f"'{c}'" for c in close) + "?")
    if known and len(known) <= 40:
        parts.append(f"known{(' ' + what) if what else ''}: " + ", ".join(known))
    return " ".join(parts) if parts else ""
