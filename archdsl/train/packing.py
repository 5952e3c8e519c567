"""Packed training windows (``archdsl train --pack``): the recurrence starts afresh at every document.

A document starts at each occurrence of the separator (``--doc-sep``, a NUL byte by default) and at
the start of each data file; the separator is the first byte(s) of the document it starts, so the
model reads it right after each reset, as a beginning-of-document mark. On the embedded demo corpus
the separator is the ``# file: `` line that heads each source file: every file is a document.

Windows are drawn exactly as without packing (the same random offsets, so the same bytes): a window
begins wherever its offset falls, possibly inside a document, which it then sees truncated, holds
whole documents, and ends inside one. What packing changes is that each window carries its document
boundaries: the B windows of a step run as one packed row ``[1, B * T]`` with ``cu_seqlens`` (the
window starts and the document starts inside them, archdsl/packed.py), so no state crosses a
document boundary, and the target that would cross one (the first byte of the next document,
predicted from the end of the previous) is ``IGNORE``, left out of the loss. The loss of a packed
batch is thus that of running its pieces as separate sequences, each byte scored once.

Held-out evaluation is unchanged (consecutive windows without resets), so a packed and an unpacked
run score the same bytes the same way. Packing needs a model built from a spec (the lstm and gru
baselines are); the other baselines' mixers (mamba2, fla-gdn, llama, nn-lstm, nn-gru) take no
``cu_seqlens`` here and are refused before anything is built.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from archdsl.errors import ArchdslError
from archdsl.train.data import ByteData, _to_device

IGNORE = -100  # the target index F.cross_entropy leaves out (its default ignore_index)
DEFAULT_SEP = "\\0"  # as written on the command line: one NUL byte
DEMO_SEP = b"# file: "  # the header of each source file in the embedded demo corpus
_ESCAPES = {"0": b"\0", "n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\"}


def separator(text: str) -> bytes:
    r"""The bytes of a ``--doc-sep`` as written: UTF-8 text with the escapes \0 \n \t \r \\ \xHH."""
    out, pos = bytearray(), 0
    for m in re.finditer(r"\\(x[0-9a-fA-F]{2}|.)?", text):
        out += text[pos : m.start()].encode()
        code = m.group(1)
        if code is not None and code[0] == "x" and len(code) == 3:
            out.append(int(code[1:], 16))
        elif code in _ESCAPES:
            out += _ESCAPES[code]
        else:
            raise ArchdslError(
                f"--doc-sep: expected text with the escapes \\0 \\n \\t \\r \\\\ \\xHH, found "
                f"'{text}' (unknown escape '\\{code or ''}' at character {m.start() + 1})"
            )
        pos = m.end()
    out += text[pos:].encode()
    if not out:
        raise ArchdslError("--doc-sep: expected at least one byte, found an empty separator")
    return bytes(out)


def document_starts(stream, offset: int, seq: int, sep: bytes) -> list[int]:
    """Window positions p in [1, seq] where a document starts (byte ``offset + p`` of ``stream``):
    each occurrence of ``sep`` that lies whole in the stream, and each file start."""
    # look ahead far enough to see a separator that begins at the window's last byte
    length = min(seq + len(sep), stream.size - offset)
    text = stream.read(offset, length).tobytes()
    starts, at = set(), text.find(sep)
    while 0 <= at <= seq:
        if at > 0:  # the window's first byte starts a sequence anyway
            starts.add(at)
        at = text.find(sep, at + len(sep))
    files = stream.starts[(stream.starts > offset) & (stream.starts <= offset + seq)]
    starts.update(int(s) - offset for s in files)
    return sorted(starts)


def pack_window_starts(starts: list[list[int]], seq: int) -> tuple[np.ndarray, torch.Tensor]:
    """The target mask [B, T] (True: the target is a document's first byte) and ``cu_seqlens`` of
    the B windows laid end to end in one row of B * T inputs."""
    mask = np.zeros((len(starts), seq), dtype=bool)
    cu = []
    for b, positions in enumerate(starts):
        cu.append(b * seq)
        for p in positions:
            mask[b, p - 1] = True  # input p - 1 would predict byte p, which starts a document
            if p < seq:
                cu.append(b * seq + p)  # input p starts a sequence
    cu.append(len(starts) * seq)
    return mask, torch.tensor(cu, dtype=torch.int64)


class PackedData(ByteData):
    """``ByteData`` whose training batches are ``(x [B, T], y [B, T], cu_seqlens [N + 1])``, with the
    targets that cross a document boundary set to ``IGNORE``."""

    def __init__(self, train, val=None, *, val_fraction=0.01, seed=0, sep: bytes = b"\0"):
        super().__init__(train, val, val_fraction=val_fraction, seed=seed)
        self.sep = sep

    def batch(self, step: int, batch: int, seq: int, device: str | torch.device = "cpu"):
        offsets = [int(o) for o in self.offsets(step, batch, seq)]
        rows = np.stack([self.train.read(o, seq + 1) for o in offsets])
        starts = [document_starts(self.train, o, seq, self.sep) for o in offsets]
        mask, cu = pack_window_starts(starts, seq)
        x, y = _to_device(rows, device)
        y = y.masked_fill(torch.from_numpy(mask).to(y.device), IGNORE)
        return x, y, cu


def open_data(cfg, model_cfg, train_files: list[str], val: str | None) -> ByteData:
    """The trainer's data: packed windows with ``cfg.pack`` (refused for a baseline), else plain ones."""
    if not cfg.pack:
        return ByteData(train_files, val, val_fraction=cfg.val_fraction, seed=cfg.seed)
    from archdsl.lm import budget

    if model_cfg.model in budget.BASELINES:  # lstm and gru are specs: they pack
        raise ArchdslError(
            f"--pack: '{model_cfg.model}' is a baseline; packed windows reset the state at each document "
            "through cu_seqlens, which only models built from a spec (lstm and gru included) take",
            hint="train the baseline without --pack",
        )
    if cfg.doc_sep is not None:
        sep = separator(cfg.doc_sep)
    else:
        sep = DEMO_SEP if not cfg.data else separator(DEFAULT_SEP)
    return PackedData(train_files, val, val_fraction=cfg.val_fraction, seed=cfg.seed, sep=sep)


def packed_logits(forward, x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, 256] of the B windows run as one packed row (``forward``: the LanguageModel)."""
    B, T = x.shape
    return forward(x.reshape(1, B * T), cu_seqlens=cu_seqlens).reshape(B, T, -1)
