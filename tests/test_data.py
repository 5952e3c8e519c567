"""Byte data: windows and targets line up, sampling is a function of (seed, step), files of every
kind read as one stream, the held-out set is never trained on and is scored byte by byte."""

import importlib.util
import lzma
from pathlib import Path

import numpy as np
import pytest

from archdsl.errors import ArchdslError
from archdsl.train import data
from archdsl.train.data import ByteData, default_corpus, open_bytes

CORPUS = Path(__file__).resolve().parent / "data"


pytestmark = pytest.mark.usefixtures("cache")  # each test its own kernel cache (conftest.py)


@pytest.fixture
def noise(tmp_path) -> tuple[Path, bytes]:
    raw = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    path = tmp_path / "noise.bin"
    path.write_bytes(raw)
    return path, raw


def test_targets_are_inputs_shifted_by_one(noise):
    path, raw = noise
    d = ByteData([str(path)], val_fraction=0.1, seed=3)
    x, y = d.batch(step=7, batch=6, seq=33)
    assert x.shape == y.shape == (6, 33)
    for row, o in enumerate(d.offsets(7, 6, 33)):
        window = raw[o : o + 34]  # T + 1 bytes
        assert bytes(x[row].tolist()) == window[:-1]
        assert bytes(y[row].tolist()) == window[1:]


def test_batches_are_a_function_of_seed_and_step(noise):
    path, _ = noise
    a, b = ByteData([str(path)], seed=1), ByteData([str(path)], seed=1)
    assert (a.batch(5, 4, 16)[0] == b.batch(5, 4, 16)[0]).all()
    assert not (a.batch(5, 4, 16)[0] == a.batch(6, 4, 16)[0]).all()
    assert not (a.batch(5, 4, 16)[0] == ByteData([str(path)], seed=2).batch(5, 4, 16)[0]).all()


def test_xz_npy_and_text_read_as_one_stream(tmp_path, cache):
    parts = [b"first file, plain text\n", bytes(range(256)) * 3, b"third: compressed\n" * 40]
    (tmp_path / "a.txt").write_bytes(parts[0])
    np.save(tmp_path / "b.npy", np.frombuffer(parts[1], dtype=np.uint8))
    (tmp_path / "c.txt.xz").write_bytes(lzma.compress(parts[2]))
    paths = [str(tmp_path / n) for n in ("a.txt", "b.npy", "c.txt.xz")]
    stream = data.open_stream(paths)
    whole = b"".join(parts)
    assert stream.size == len(whole)
    assert bytes(stream.read(0, len(whole))) == whole
    edge = len(parts[0]) + len(parts[1]) - 5  # a window across the .npy/.xz boundary
    assert bytes(stream.read(edge, 20)) == whole[edge : edge + 20]
    cached = list(cache.rglob("c.*.txt"))
    assert len(cached) == 1 and cached[0].read_bytes() == parts[2]
    mtime = cached[0].stat().st_mtime_ns
    data.open_stream(paths)  # decompressed once: the cache file is reused
    assert cached[0].stat().st_mtime_ns == mtime


def test_held_out_tail_is_never_sampled_and_scored_once(noise):
    path, raw = noise
    d = ByteData([str(path)], val_fraction=0.2, seed=0)
    cut = len(raw) - int(len(raw) * 0.2)
    assert (d.split.train_bytes, d.split.val_bytes) == (cut, len(raw) - cut)
    top = max(int(o) for step in range(200) for o in d.offsets(step, 8, 50))
    assert top + 51 <= cut  # every training window ends before the tail
    targets = [bytes(y.reshape(-1).tolist()) for _, y in d.eval_batches(700, batch=3, seq=50)]
    assert d.eval_windows(700, 50) == 14
    assert b"".join(targets) == raw[cut + 1 : cut + 1 + 14 * 50]  # each held-out byte once, in order


def test_separate_held_out_file_and_test_corpus():
    val = CORPUS / "corpus-val.txt.xz"
    with lzma.open(val) as f:
        whole = f.read()
    head = whole[:4096]
    d = ByteData([str(val)], str(val))
    assert d.split.val == str(val) and d.split.val_bytes == d.split.train_bytes == len(whole) > 250_000
    x, y = next(d.eval_batches(4096, batch=2, seq=64))
    assert bytes(x[0].tolist()) == head[:64] and bytes(y[1].tolist()) == head[65:129]


def test_shipped_test_corpus_is_what_its_script_writes():
    """tests/data holds the suite's only corpus; its files are the generator's output, nothing else."""
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    for name, (seed, size) in make.FILES.items():
        with lzma.open(CORPUS / name) as f:
            assert f.read() == make.text(seed, size), name
        assert (CORPUS / name).stat().st_size < 300_000


def test_default_corpus_is_the_python_standard_library():
    train, val = default_corpus()
    text, held = Path(train[0]).read_bytes(), Path(val).read_bytes()
    assert text.startswith(b"# file: ") and b"\ndef " in text and len(text) > 1_000_000
    held_files = {line for line in held.splitlines() if line.startswith(b"# file: ")}
    train_files = {line for line in text.splitlines() if line.startswith(b"# file: ")}
    assert held_files and not held_files & train_files
    assert default_corpus() == (train, val)


def _npy(path: Path, array) -> Path:
    np.save(path, array)
    return path


def _file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.txt", "no such data file"),
        (lambda p: _file(p / "empty.txt", b""), "data file is empty"),
        (lambda p: _npy(p / "f.npy", np.zeros(4, np.float32)), "must hold uint8 bytes, found dtype float32"),
        (lambda p: _file(p / "bad.xz", b"not xz"), "not a valid .xz file"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, make, message):
    with pytest.raises(ArchdslError, match=message):
        open_bytes(make(tmp_path))


def test_data_shorter_than_a_window_is_an_error(tmp_path):
    (tmp_path / "tiny.txt").write_bytes(b"0123456789" * 3)
    d = ByteData([str(tmp_path / "tiny.txt")], val_fraction=0.5)
    with pytest.raises(ArchdslError, match="fewer than one window"):
        d.batch(0, 2, 64)
    with pytest.raises(ArchdslError, match="held-out data has 15 bytes"):
        d.eval_windows(100, 64)
