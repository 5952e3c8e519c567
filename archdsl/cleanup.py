"""A failed command leaves nothing behind: the folders it made and left empty are removed.

``archdsl train`` makes its run folder (and its lock) before it knows whether the model can be built
or the data read; when the command then fails, the folder holds nothing of value. The folders a
command may write into (``--out``, ``--runs``, ``--dest``, and ``runs/``, the default root) are looked
at before and after it runs; a folder that did not exist before and holds nothing but a lock file
afterwards is removed. Nothing that existed before, and nothing that holds a file, is ever touched.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

#: files that do not make a folder worth keeping
DEBRIS = {".lock"}
FLAGS = ("out", "runs", "dest")
DEFAULT_ROOT = "runs"


def _roots(args) -> list[Path]:
    roots = [Path(DEFAULT_ROOT)]
    roots += [Path(v) for f in FLAGS if isinstance(v := getattr(args, f, None), str) and v]
    return roots


def _dirs(roots: list[Path]) -> set[Path]:
    """Every folder at or under the roots."""
    found: set[Path] = set()
    for root in roots:
        root = root.absolute()
        if root.is_dir():
            found.add(root)
            found.update(p for p in root.rglob("*") if p.is_dir())
    return found


def _worthless(path: Path) -> bool:
    """Holds nothing but a lock file that no process holds (another command's fresh run folder does)."""
    try:
        return all(p.name in DEBRIS and p.is_file() and not _held(p) for p in path.iterdir())
    except OSError:
        return False


def _held(lock: Path) -> bool:
    try:
        import fcntl
    except ImportError:  # not POSIX: keep the folder
        return True
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def run_cleanly(args, run) -> int:
    """``run(args)``; when it raises or returns a non-zero status, remove the folders it made that
    hold nothing but debris."""
    roots = _roots(args)
    before = _dirs(roots)
    status = 1
    try:
        status = int(run(args) or 0)
        return status
    finally:
        if status != 0:
            _remove_new_empty(roots, before)


def _remove_new_empty(roots: list[Path], before: set[Path]) -> None:
    made = sorted(_dirs(roots) - before, key=lambda p: len(p.parts), reverse=True)
    for path in made:
        if _worthless(path):
            for p in path.iterdir():
                p.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.rmdir()
