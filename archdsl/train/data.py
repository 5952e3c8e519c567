"""Byte data for the LM: memory-mapped files as one stream, random windows, a held-out set.

Any file is a stream of bytes (vocabulary 256): plain text, a ``.bin`` of raw bytes, a ``.npy`` of
uint8, or an ``.xz`` of any of these (decompressed once into a cache file, then memory-mapped).
Several files are concatenated as they are, into one stream. A training batch is B windows of
T + 1 bytes at random offsets drawn from ``(seed, step)``; inputs are the first T bytes, targets the
last T, and no window is ever padded. The held-out set is a separate file or the tail of the stream;
evaluation scores a fixed number of its bytes in consecutive windows, each byte once.
"""

from __future__ import annotations

import hashlib
import lzma
import math
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from archdsl.errors import ArchdslError

CHUNK = 1 << 24  # bytes per read when hashing or decompressing


def cache_dir() -> Path:
    """Where decompressed data lives: ``$ARCHDSL_CACHE`` or ``~/.cache/archdsl``."""
    root = os.environ.get("ARCHDSL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "archdsl")
    return Path(root) / "data"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _write_atomic(target: Path, chunks) -> None:
    """Write to a temporary name and rename, so concurrent readers never see half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write leaves nothing behind


def decompressed(path: Path) -> Path:
    """The cache file holding the decompressed bytes of an ``.xz`` file (keyed by its content hash)."""
    inner = Path(path.name[:-3])  # keeps the inner suffix, so a .npy.xz is read as a .npy
    target = cache_dir() / f"{inner.stem}.{_sha256(path)[:16]}{inner.suffix}"
    if not target.exists():

        def chunks():
            with lzma.open(path, "rb") as f:
                while block := f.read(CHUNK):
                    yield block

        try:
            _write_atomic(target, chunks())
        except (lzma.LZMAError, EOFError) as e:  # EOFError: a truncated file
            raise ArchdslError(f"{path}: not a valid .xz file ({e})") from None
    return target


def open_bytes(path: str | os.PathLike) -> np.ndarray:
    """One file as a read-only uint8 array backed by a memory map."""
    p = Path(path)
    if not p.is_file():
        raise ArchdslError(f"no such data file: {path}")
    try:
        return _open_bytes(p, str(path))
    except OSError as e:
        raise ArchdslError(f"cannot read data file {path}: {e.strerror or e}") from None


def _open_bytes(p: Path, path: str) -> np.ndarray:
    if p.suffix == ".xz":
        return open_bytes(decompressed(p))
    if p.suffix == ".npy":
        try:
            arr = np.load(p, mmap_mode="r")
        except ValueError as e:
            raise ArchdslError(f"{path}: not a readable .npy file ({e})") from None
        if arr.dtype != np.uint8:
            raise ArchdslError(f"{path}: a .npy data file must hold uint8 bytes, found dtype {arr.dtype}")
        return arr.reshape(-1)
    return _mmap(p, str(path))


def _mmap(p: Path, shown: str) -> np.ndarray:
    if p.stat().st_size == 0:
        raise ArchdslError(f"data file is empty: {shown}")
    return np.memmap(p, dtype=np.uint8, mode="r")


class Stream:
    """Several byte arrays read as one: ``read(start, length)`` may cross file boundaries."""

    def __init__(self, parts: list[np.ndarray], names: list[str]):
        self.parts, self.names = parts, names
        self.starts = np.cumsum([0] + [len(p) for p in parts])  # [len(parts) + 1]
        self.size = int(self.starts[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        k = int(np.searchsorted(self.starts, start, side="right")) - 1
        offset = start - int(self.starts[k])
        first = self.parts[k][offset : offset + length]
        if len(first) == length:
            return first
        pieces, got = [first], len(first)
        while got < length:
            k += 1
            pieces.append(self.parts[k][: length - got])
            got += len(pieces[-1])
        return np.concatenate(pieces)

    def slice(self, start: int, stop: int) -> Stream:
        """A view of bytes ``[start, stop)`` (used to split off a held-out tail)."""
        out = Stream.__new__(Stream)
        parts, names = [], []
        for part, name, s0 in zip(self.parts, self.names, self.starts):
            lo, hi = max(start - int(s0), 0), min(stop - int(s0), len(part))
            if lo < hi:
                parts.append(part[lo:hi])
                names.append(name)
        Stream.__init__(out, parts, names)
        return out


def open_stream(paths: list[str]) -> Stream:
    if not paths:
        raise ArchdslError("no data files given")
    return Stream([open_bytes(p) for p in paths], [str(p) for p in paths])


@dataclass
class Split:
    """How the held-out set was chosen (recorded in the run's result)."""

    train: list[str]
    val: str | None  # a separate held-out file, or None for a held-out tail
    train_bytes: int
    val_bytes: int


class ByteData:
    """Training windows and held-out windows over memory-mapped byte files.

    ``val`` names a separate held-out file; without it the last ``val_fraction`` of the training
    stream is held out (and never sampled for training).
    """

    def __init__(
        self, train: list[str], val: str | None = None, *, val_fraction: float = 0.01, seed: int = 0
    ):
        stream = open_stream(list(train))
        if val is not None:
            self.train, self.val = stream, open_stream([val])
        else:
            if not 0.0 < val_fraction < 1.0:
                raise ArchdslError(f"val_fraction must be in (0, 1), found {val_fraction}")
            cut = stream.size - max(1, int(stream.size * val_fraction))
            self.train, self.val = stream.slice(0, cut), stream.slice(cut, stream.size)
        self.seed = seed
        self.split = Split([str(p) for p in train], val, self.train.size, self.val.size)

    def offsets(self, step: int, batch: int, seq: int) -> np.ndarray:
        """The B window starts of training step ``step``: a pure function of (seed, step)."""
        high = self.train.size - (seq + 1)
        if high < 0:
            raise ArchdslError(
                f"training data has {self.train.size:,} bytes, fewer than one window of "
                f"seq + 1 = {seq + 1} bytes"
            )
        rng = np.random.default_rng([self.seed, step])
        return rng.integers(0, high + 1, size=batch)

    def batch(self, step: int, batch: int, seq: int, device: str | torch.device = "cpu"):
        """Inputs and targets of step ``step``: two LongTensors [B, T] (targets = inputs shifted by one)."""
        rows = np.stack([self.train.read(int(o), seq + 1) for o in self.offsets(step, batch, seq)])
        return _to_device(rows, device)

    def eval_batches(
        self, n_bytes: int, batch: int, seq: int, device: str | torch.device = "cpu"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive held-out windows that score ``eval_windows(n_bytes, seq) * seq`` bytes, each once."""
        n_windows = self.eval_windows(n_bytes, seq)
        for first in range(0, n_windows, batch):
            idx = range(first, min(first + batch, n_windows))
            rows = np.stack([self.val.read(w * seq, seq + 1) for w in idx])
            yield _to_device(rows, device)

    def eval_windows(self, n_bytes: int, seq: int) -> int:
        """Windows of T scored bytes per evaluation: ``n_bytes // T``, capped by the held-out set."""
        available = (self.val.size - 1) // seq
        if available < 1:
            raise ArchdslError(
                f"held-out data has {self.val.size:,} bytes, fewer than one window of "
                f"seq + 1 = {seq + 1} bytes"
            )
        return max(1, min(n_bytes // seq, available))


def _to_device(rows: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.from_numpy(rows)  # [B, T + 1] uint8
    if torch.device(device).type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    t = t.long()
    return t[:, :-1], t[:, 1:]


def bits_per_byte(total_nats: float, n_bytes: int) -> float:
    return total_nats / n_bytes / math.log(2)


# ---- the embedded default corpus ------------------------------------------------------------------
VAL_EVERY = 50  # one source file in about 50 (chosen by a hash of its path) is held out


def default_corpus() -> tuple[list[str], str]:
    """The demo corpus every machine with Python has: the standard library's own ``.py`` sources.

    The installed standard library (without its test suites and site-packages), sorted by path,
    each file preceded by a ``# file: <path>`` line, written once to the cache as a training file
    and a held-out file (about one file in 50, by a hash of its path). Returns ``([train], val)``.
    It is Python code, not prose, and differs between Python versions: fine for a demo that shows
    the loss falling, useless for comparing numbers across machines. Use ``--data`` for real runs.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not _skipped(p.relative_to(root)))
    if not files:
        raise ArchdslError(f"no Python sources found under {root} for the default corpus")
    key = hashlib.sha256()
    for p in files:
        st = p.stat()
        key.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    stem = cache_dir() / f"python-stdlib-{key.hexdigest()[:16]}"
    train, val = Path(f"{stem}.train.txt"), Path(f"{stem}.val.txt")
    if not (train.exists() and val.exists()):
        held = [p for p in files if _held_out(p.relative_to(root))]
        kept = [p for p in files if not _held_out(p.relative_to(root))]
        _write_atomic(train, _sources(kept, root))
        _write_atomic(val, _sources(held, root))
    return [str(train)], str(val)


def _skipped(rel: Path) -> bool:
    return bool({"test", "tests", "idle_test", "site-packages", "dist-packages"} & set(rel.parts[:-1]))


def _held_out(rel: Path) -> bool:
    return int(hashlib.sha256(str(rel).encode()).hexdigest(), 16) % VAL_EVERY == 0


def _sources(files: list[Path], root: Path):
    for p in files:
        yield f"# file: {p.relative_to(root)}\n".encode() + p.read_bytes() + b"\n"
