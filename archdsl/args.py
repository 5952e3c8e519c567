"""Argument types shared by every ``archdsl`` command.

Each is an argparse ``type=``: a value it refuses raises ``argparse.ArgumentTypeError``, so argparse
itself prints the usage and one ``error: argument --flag: …`` line and exits with status 2 before
anything runs. The messages say what was expected and what was found.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

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


def power_of_two(text: str) -> int:
    value = _int(text, "a power of two (1, 2, 4, 8, …)")
    if value < 1 or value & (value - 1):
        raise _bad("a power of two (1, 2, 4, 8, …)", text)
    return value


def count(text: str) -> int:
    """A positive count with an optional suffix: ``250K``, ``100M``, ``1.3B``, ``12345``; the text is
    kept as given (study names and titles show it), the command reads it with ``parse_count``."""
    from archdsl.budget import parse_count
    from archdsl.errors import ArchdslError

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


# ---- checks that need more than one flag ------------------------------------------------------------
#: bytes per token that a step needs at the least: the logits over 256 bytes in fp32, their float copy
#: and their gradient (the model's own activations come on top)
FLOOR_BYTES_PER_TOKEN = 3 * 256 * 4


def free_memory(device: str) -> int | None:
    """Bytes free on ``device`` (cuda: the driver's count; cpu: MemAvailable), None when unknown."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_batch_memory(batch: int, seq: int, device: str) -> None:
    """Refuse, before anything is built, a batch x seq whose logits alone do not fit in free memory."""
    from archdsl.errors import ArchdslError

    need = batch * seq * FLOOR_BYTES_PER_TOKEN
    free = free_memory(device)
    if free is not None and need > free:
        raise ArchdslError(
            f"--batch {batch} x --seq {seq} = {batch * seq:,} tokens per step need at least "
            f"{need / 2**30:,.1f} GiB (the logits alone), but {device} has {free / 2**30:,.1f} GiB free",
            hint="lower --batch or --seq",
        )
