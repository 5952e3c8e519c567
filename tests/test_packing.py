"""Packed training windows (``archdsl train --pack``): the loader's document boundaries and
cu_seqlens, a packed batch's loss and gradients equal to its documents run one by one, and a packed
run end to end."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from archdsl import cli
from archdsl.errors import ArchdslError
from archdsl.lm.config import ModelConfig
from archdsl.lm.zoo import build_model
from archdsl.train.data import Stream
from archdsl.train.packing import IGNORE, PackedData, document_starts, separator
from archdsl.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
CORPUS = str(ROOT / "tests" / "data" / "corpus-val.txt.xz")
TINY = ["--preset", "test", "--depth", "1", "--batch", "2", "--seq", "32", "--eval-bytes", "64"]


pytestmark = pytest.mark.usefixtures("cache")  # each test its own kernel cache (conftest.py)


@pytest.mark.parametrize(
    ("text", "sep"),
    [
        ("\\0", b"\0"),
        ("\\n\\n", b"\n\n"),
        ("<|end|>", b"<|end|>"),
        ("\\x41\\\\", b"A\\"),
        ("§", "§".encode()),
    ],
)
def test_separator_reads_escapes(text, sep):
    assert separator(text) == sep


@pytest.mark.parametrize(("text", "message"), [("\\q", "unknown escape '\\q'"), ("", "an empty separator")])
def test_separator_refuses_what_is_no_bytes(text, message):
    with pytest.raises(ArchdslError, match=message.replace("\\", "\\\\")):
        separator(text)


def documents(rng, n: int, sep: bytes) -> bytes:
    """n documents of random lengths (1 to 12 bytes of letters), each starting with ``sep``."""
    return b"".join(
        sep + rng.integers(97, 123, size=int(rng.integers(1, 13))).astype(np.uint8).tobytes()
        for _ in range(n)
    )


def brute_starts(stream_bytes: bytes, file_starts: set[int], sep: bytes, offset: int, seq: int) -> list[int]:
    """Document starts in a window, found byte by byte (independently of the loader's search)."""
    found, k = [], 0
    while k < len(stream_bytes):  # the separators, scanned left to right without overlap
        if stream_bytes.startswith(sep, k):
            found.append(k)
            k += len(sep)
        else:
            k += 1
    starts = set(found) | file_starts
    return sorted(s - offset for s in starts if offset < s <= offset + seq)


def test_separator_at_the_window_end_is_seen_across_it():
    """A two-byte separator that begins at the last byte of a window masks that last target."""
    stream = Stream([np.frombuffer(b"aaaa\n\nbbbb\n\ncc", dtype=np.uint8)], ["a"])
    assert document_starts(stream, 0, 4, b"\n\n") == [4]
    assert document_starts(stream, 0, 3, b"\n\n") == []
    assert document_starts(stream, 1, 9, b"\n\n") == [3, 9]


@pytest.mark.parametrize("sep", [b"\0", b"<>"])
def test_loader_marks_every_document_start(tmp_path, sep):
    rng = np.random.default_rng(1)
    files = [tmp_path / "a.bin", tmp_path / "b.bin"]
    files[0].write_bytes(b"head" + documents(rng, 40, sep))  # a file that does not begin with sep
    files[1].write_bytes(documents(rng, 40, sep))
    (tmp_path / "val.bin").write_bytes(documents(rng, 10, sep))
    data = PackedData([str(f) for f in files], str(tmp_path / "val.bin"), seed=3, sep=sep)
    raw = b"".join(f.read_bytes() for f in files)
    file_starts = {0, len(files[0].read_bytes())}
    B, T = 6, 24
    seen_inside = 0
    for step in range(4):
        x, y, cu = data.batch(step, B, T)
        expected_cu = []
        for b, o in enumerate(data.offsets(step, B, T)):
            o = int(o)
            window = torch.tensor(list(raw[o : o + T + 1]))
            assert torch.equal(x[b], window[:-1])
            starts = brute_starts(raw, file_starts, sep, o, T)
            masked = [p + 1 for p in range(T) if y[b, p] == IGNORE]
            assert masked == starts  # exactly the targets that begin a document
            keep = y[b] != IGNORE
            assert torch.equal(y[b][keep], window[1:][keep])
            expected_cu += [b * T] + [b * T + p for p in starts if p < T]
            seen_inside += sum(p < T for p in starts)
        assert cu.tolist() == expected_cu + [B * T]
    assert seen_inside > 20  # the windows did cross many documents


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig("e88", preset="test", depth=2, seed=seed)).double()


def test_packed_loss_and_gradients_equal_the_documents_run_one_by_one(tmp_path):
    """The trainer's loss on a packed batch: every piece of every window runs from a zero state and
    no target crosses a document, so loss and gradients are those of the pieces run separately."""
    rng = np.random.default_rng(2)
    (tmp_path / "t.bin").write_bytes(documents(rng, 60, b"\0"))
    data = PackedData([str(tmp_path / "t.bin")], val=None, val_fraction=0.1, sep=b"\0")
    B, T = 3, 20
    x, y, cu = data.batch(0, B, T)
    model = tiny_model()
    trainer = SimpleNamespace(autocast=nullcontext(), forward=model, graphs=False)  # eager, no CUDA graphs
    packed = Trainer.loss(trainer, x, y, cu)
    g_packed = torch.autograd.grad(packed, list(model.parameters()))

    total, count = 0.0, 0
    pieces = 0
    for o in data.offsets(0, B, T):
        window = torch.from_numpy(data.train.read(int(o), T + 1).astype(np.int64))
        starts = brute_starts(data.train.read(0, data.train.size).tobytes(), {0}, b"\0", int(o), T)
        bounds = [0] + [p for p in starts if p < T] + [T]
        for a, e in zip(bounds, bounds[1:]):
            logits = model(window[a:e].reshape(1, -1))[0]  # a sequence of its own, from a zero state
            target = window[a + 1 : e + 1]
            n = e - a - (1 if e in starts else 0)  # the byte after the piece starts a document
            total = total + F.cross_entropy(logits[:n], target[:n], reduction="sum")
            count += n
            pieces += 1
    separate = total / count
    g_separate = torch.autograd.grad(separate, list(model.parameters()))
    assert pieces > B + 3  # the windows were cut into several documents
    assert packed.item() == pytest.approx(separate.item(), rel=1e-6)  # the trainer's fp32 logits
    for gp, gs in zip(g_packed, g_separate):
        torch.testing.assert_close(gp, gs, rtol=1e-5, atol=1e-8)
    unpacked = F.cross_entropy(
        model(x).reshape(-1, 256),
        torch.from_numpy(
            np.stack([data.train.read(int(o) + 1, T) for o in data.offsets(0, B, T)]).astype(np.int64)
        ).reshape(-1),
    )
    assert unpacked.item() != pytest.approx(packed.item(), rel=1e-6)  # packing changed something


def run_cli(argv, out: Path) -> int:
    return cli.main(["train", "e88", *TINY, "--device", "cpu", "--out", str(out), "--no-progress", *argv])


def test_train_pack_runs_end_to_end(tmp_path):
    out = tmp_path / "run"
    argv = ["--steps", "3", "--lr", "3e-2", "--data", CORPUS, "--pack", "--doc-sep", "\\n\\n"]
    assert run_cli(argv, out) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "ok" and result["steps"] == 3
    assert result["config"]["pack"] is True and result["config"]["doc_sep"] == "\\n\\n"
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in steps if e["event"] == "step"]
    assert losses and all(np.isfinite(losses))


def test_pack_refuses_a_baseline_and_a_lone_doc_sep(tmp_path, capsys):
    out = tmp_path / "llama"
    argv = ["train", "llama", "--dim", "16", "--depth", "1", "--steps", "1", "--device", "cpu"]
    assert cli.main([*argv, "--data", CORPUS, "--pack", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--pack: 'llama' is a baseline" in err and "Traceback" not in err
    assert not out.exists()
    assert run_cli(["--steps", "1", "--data", CORPUS, "--doc-sep", "\\n"], tmp_path / "r") == 2
    assert "--doc-sep is given without --pack" in capsys.readouterr().err
    assert run_cli(["--steps", "1", "--pack", "--doc-sep", "\\q"], tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "argument --doc-sep: expected text with the escapes" in err and "unknown escape '\\q'" in err


def test_the_demo_corpus_packs_one_source_file_per_document(tmp_path):
    """Without --data (the embedded corpus) and without --doc-sep, each '# file: ' header starts a
    document; with --data the default is a NUL byte; without --pack the windows are plain."""
    from archdsl.train.data import ByteData
    from archdsl.train.packing import DEMO_SEP, open_data

    text = b"".join(b"# file: m%d.py\nimport os\n\0x = %d\n" % (k, k) for k in range(50))
    (tmp_path / "demo.txt").write_bytes(text)
    files = [str(tmp_path / "demo.txt")]

    def data(model="e88", **kw):
        cfg = dict(pack=True, doc_sep=None, data=[], val_fraction=0.1, seed=0)
        return open_data(SimpleNamespace(**{**cfg, **kw}), ModelConfig(model), files, None)

    assert data().sep == DEMO_SEP and DEMO_SEP in text
    assert data(data=files).sep == b"\0"
    assert data("lstm", doc_sep="\\n").sep == b"\n"  # lstm and gru are specs: they pack
    plain = data(pack=False)
    assert type(plain) is ByteData and len(plain.batch(0, 2, 8)) == 2
