"""A run directory (``--out``) owned by one run at a time, never overwritten by accident.

``RunDir.open`` takes an exclusive lock on ``<out>/.lock`` (``flock``: the kernel drops it when the
process ends, however it ends), so a second run on the same folder stops at once with an error
naming it; a folder that already holds a run is refused unless the run is resumed (``--resume``) or
replaced (``--force``, which removes the old run's files first). On resume the log is cut back to
the checkpoint's step, so that steps lost to a crash or ``kill -9`` never appear twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path

from archdsl.errors import ArchdslError
from archdsl.train.checkpoint import NAME, OLD_NAME

LOCK = ".lock"
LOG = "log.jsonl"
RESULT = "result.json"
OUTPUTS = (LOG, RESULT, NAME, OLD_NAME)  # what a run leaves; --force removes these and nothing else


class RunDir:
    """The locked run directory; ``close()`` (or the process's end) releases it."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    @classmethod
    def open(cls, path: Path, resume: bool, force: bool) -> RunDir:
        if path.exists() and not path.is_dir():
            raise ArchdslError(f"--out {path} is a file, not a directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ArchdslError(f"cannot use --out {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise ArchdslError(
                f"--out {path} is in use by another run{f' (pid {owner})' if owner else ''}",
                hint="wait for it to end, or give another --out",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        run = cls(path, fd)
        try:
            run._check_earlier(resume, force)
        except BaseException:
            run.close()
            raise
        return run

    def _check_earlier(self, resume: bool, force: bool) -> None:
        found = [name for name in OUTPUTS if (self.path / name).exists()]
        if not found or resume:
            return
        if force:
            for name in found:
                (self.path / name).unlink()
            return
        status = ""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # else only the files are named
            status = f" (status {json.loads((self.path / RESULT).read_text())['status']})"
        raise ArchdslError(
            f"--out {self.path} already holds a run{status}: {', '.join(found)}",
            hint="--resume continues it, --force replaces it, or give another --out",
        )

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None


def cut_log(path: Path, step: int) -> None:
    """Drop every line of the log from the first one past ``step`` (or the first torn line) on."""
    if not path.exists():
        return
    kept = []
    with open(path, "rb") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                break  # a line torn by a crash: it and anything after it are lost steps
            if not isinstance(record, dict) or not line.endswith(b"\n"):
                break
            if isinstance(record.get("step"), int) and record["step"] > step:
                break
            kept.append(line)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(b"".join(kept))
    os.replace(tmp, path)


_HASHES: dict[tuple, str] = {}


def file_hash(path: str) -> str:
    """sha256 of a file's bytes (remembered per path, size and mtime within this process)."""
    try:
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if key not in _HASHES:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 24):
                    h.update(block)
            _HASHES[key] = h.hexdigest()
    except OSError as e:
        raise ArchdslError(f"cannot read data file {path}: {e.strerror or e}") from None
    return _HASHES[key]


def identity(info: dict, train_files: list[str], val: str | None) -> dict:
    """What a resume must find unchanged, by content: the spec's text (a baseline: its name), the data."""
    spec = info.get("spec_text")
    model = "sha256:" + hashlib.sha256(spec.encode()).hexdigest() if spec else f"name:{info.get('model')}"
    return {
        "model": model,
        "data": [file_hash(p) for p in train_files],
        "val": file_hash(val) if val is not None else None,
    }
