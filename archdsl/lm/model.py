"""The byte-level language model around any mixer (variants.md §1).

    y_0 = E[bytes]                          E: [256, D], N(0, 0.02)
    for each layer:  r = r + y;  y = Mixer(Norm(r))          (r: the residual stream, fp32)
    logits = Norm_final(r + y) @ Eᵀ         (the head is tied to the embedding)

Spec models use RMSNorm; the baselines of variants.md §5 plug their mixers (and, for mamba2 and the
LSTM/GRU wrappers, LayerNorm) into the same module. ``archdsl.lm.zoo.build_model`` builds one from a
``ModelConfig``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from archdsl.lm import generate as decoding
from archdsl.lm.blocks import NORM_EPS, TakeFirst, normed, rms_norm
from archdsl.lm.config import VOCAB, ModelConfig

__all__ = ["NORM_EPS", "VOCAB", "LanguageModel", "ModelConfig", "TakeFirst", "rms_norm"]


class LanguageModel(nn.Module):
    """``forward(idx [B, T] bytes) -> logits [B, T, 256]``; ``info`` describes the model."""

    def __init__(
        self,
        dim: int,
        mixers: list[nn.Module],
        norm: Callable[[int], nn.Module] = rms_norm,
        info: dict | None = None,
    ):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)
        self.norms = nn.ModuleList(norm(dim) for _ in mixers)
        self.mixers = nn.ModuleList(mixers)
        self.norm_f = norm(dim)
        self.info = dict(info or {})
        self.info["params"] = sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, cu_seqlens=None) -> torch.Tensor:
        """``cu_seqlens``: idx [1, total] packs sequences, each from a zero state (archdsl/packed.py;
        spec models only, as the baselines' mixers take no cu_seqlens)."""
        if cu_seqlens is not None:
            return self.forward_state(idx, None, cu_seqlens)[0]
        y = self.embed(idx)  # [B, T, D]
        r = torch.zeros(y.shape, dtype=torch.float32, device=y.device)
        for norm, mixer in zip(self.norms, self.mixers):
            r = r + y.float()  # the residual stream stays fp32
            y = mixer(normed(norm, r))  # [B, T, D]
        h = normed(self.norm_f, r + y.float())
        return F.linear(h, self.embed.weight)  # [B, T, 256], tied head

    # ---- decoding (archdsl/lm/generate.py; spec layers only) ---------------------------------------
    def forward_state(self, idx: torch.Tensor, states: list | None = None, cu_seqlens=None):
        """idx [B, T] -> (logits [B, T, 256], one state dict per layer after the last byte);
        ``cu_seqlens``: idx [1, total] packs sequences, each from its own state (archdsl/packed.py)."""
        return decoding.forward_state(self, idx, states, cu_seqlens)

    def step(self, token: torch.Tensor, states: list | None = None):
        """One byte per row: token [B] -> (logits [B, 256], the states after it)."""
        return decoding.step(self, token, states)

    def generate(
        self, prompt, n: int, temperature: float = 1.0, top_k: int | None = None, seed=None, graphs=None
    ):
        """The prompt (str, bytes or [B, T] bytes) followed by ``n`` sampled bytes, of the same type;
        ``graphs``: each byte's step replayed as a CUDA graph (None: on a GPU)."""
        return decoding.generate(self, prompt, n, temperature, top_k, seed, graphs)
