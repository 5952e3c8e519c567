"""Argument types shared by every ``archdsl`` command.

Each is an argparse ``type=``: a value it refuses raises ``argparse.ArgumentTypeError``, so argparse
itself prints the usage and one ``error: argument --flag: …`` line and exits with status 2 before
anything runs. The messages say what was expected and what was found.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path

from archdsl.errors import ArchdslError

#: the suffix a journal file of a search study must have (``runs/<study>/study.journal``)
JOURNAL_SUFFIX = ".journal"
#: database URL schemes a study's ``--storage`` may name (SQLAlchemy dialects Optuna's RDB storage takes)
STORAGE_SCHEMES = ("postgresql", "postgresql+psycopg", "postgresql+psycopg2", "mysql", "sqlite")


def _bad(expected: str, text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"expected {expected}, found '{text}'")


def _int(text: str, expected: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise _bad(expected, text) from None


def _float(text: str, expected: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise _bad(expected, text) from None
    if not math.isfinite(value):
        raise _bad(expected, text)
    return value


_COUNT_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


def parse_count(text: str | int) -> int:
    """``"100M"``, ``"1.3B"``, ``"250K"``, ``"12345"``, ``"1e8"`` -> an integer count."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgGtT]?)\s*", str(text))
    if not m:
        raise ArchdslError(
            f"cannot read a parameter count from '{text}'", hint="write for example 250K, 100M, 1.3B or 12345"
        )
    value = float(m.group(1)) * _COUNT_SUFFIX[m.group(2).upper()]
    if value < 1:
        raise ArchdslError(f"a parameter count must be positive, found '{text}'")
    return int(round(value))


def positive_int(text: str) -> int:
    value = _int(text, "a positive integer")
    if value < 1:
        raise _bad("a positive integer", text)
    return value


def nonnegative_int(text: str) -> int:
    value = _int(text, "an integer >= 0")
    if value < 0:
        raise _bad("an integer >= 0", text)
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (budgets, rates, timeouts: ``inf`` and ``nan`` are refused)."""
    value = _float(text, "a finite number > 0")
    if value <= 0:
        raise _bad("a finite number > 0", text)
    return value


def nonnegative_float(text: str) -> float:
    value = _float(text, "a finite number >= 0")
    if value < 0:
        raise _bad("a finite number >= 0", text)
    return value


def fraction(text: str) -> float:
    """A fraction in (0, 1): ``0.02`` or ``2%``."""
    t = str(text).strip()
    value = _float(t[:-1], "a fraction such as 0.02 or 2%") / 100 if t.endswith("%") else None
    if value is None:
        value = _float(t, "a fraction such as 0.02 or 2%")
    if not 0 < value < 1:
        raise _bad("a fraction between 0 and 1, such as 0.02 or 2%", text)
    return value


def power_of_two(text: str) -> int:
    value = _int(text, "a power of two (1, 2, 4, 8, …)")
    if value < 1 or value & (value - 1):
        raise _bad("a power of two (1, 2, 4, 8, …)", text)
    return value


def count(text: str) -> int:
    """A positive count with an optional suffix: ``250K``, ``100M``, ``1.3B``, ``12345``; the text is
    kept as given (study names and titles show it), the command reads it with ``parse_count``."""
    try:
        parse_count(text)
    except ArchdslError as e:
        raise argparse.ArgumentTypeError(e.message + ("; " + e.hint if e.hint else "")) from None
    return str(text).strip()


def device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` (whether CUDA is present is checked when the run starts)."""
    t = str(text).strip()
    if t in ("cpu", "cuda", "auto") or (t.startswith("cuda:") and t[5:].isdigit()):
        return t
    raise _bad("cpu, cuda or cuda:N", text)


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def writable_dir(text: str) -> str:
    """A directory that exists, or can be made: no part of it is a file, and the first existing
    folder above it can be written to."""
    if not str(text).strip():
        raise _bad("a directory", text)
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a directory, found the file '{text}'")
    top = _nearest_existing(path)
    if not top.is_dir():
        raise argparse.ArgumentTypeError(f"cannot make directory '{text}': '{top}' is a file")
    if not os.access(top, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot make or write directory '{text}': '{top}' is not writable")
    return str(text)


def storage(text: str) -> str:
    """A study's storage: a database URL (``postgresql://…``, ``sqlite:///…``) or a journal file whose
    name ends in ``.journal`` (not a directory; an unknown word is not silently made a journal file)."""
    t = str(text).strip()
    if "://" in t:
        scheme = t.split("://", 1)[0]
        if scheme not in STORAGE_SCHEMES:
            raise _bad("a database URL (postgresql://…, mysql://…, sqlite:///…)", text)
        return t
    path = Path(t)
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"expected a database URL or a {JOURNAL_SUFFIX} file, found the directory '{text}'"
        )
    if path.suffix != JOURNAL_SUFFIX:
        raise _bad(f"a database URL (postgresql://user@host/db) or a file ending in {JOURNAL_SUFFIX}", text)
    if not path.exists():
        writable_dir(str(path.parent) or ".")
    return t


#: ``--products`` (``archdsl compile``, ``verify``, ``train``; ``Options.products``): the chunked
#: strategy's tensor-core products in a bf16/fp16 layer (``codegen/run/chunked.py``'s ``PRODUCTS``)
PRODUCTS = ("tf32", "half")


def add_products(p) -> None:
    """The one ``--products`` flag of every command that compiles a spec."""
    p.add_argument(
        "--products",
        choices=PRODUCTS,
        help="the chunked strategy's tensor-core products in a bf16/fp16 layer: tf32 (default: a delta "
        "rule and every backward multiply fp32 operands as TF32) or half (every product in the layer's "
        "16-bit type, as fla and mamba_ssm: faster, less exact at small key sizes)",
    )
