"""The byte-level language model around any mixer (variants.md §1), and ``build_model``.

    y_0 = E[bytes]                          E: [256, D], N(0, 0.02)
    for each layer:  r = r + y;  y = Mixer(Norm(r))          (r: the residual stream, fp32)
    logits = Norm_final(r + y) @ Eᵀ         (the head is tied to the embedding)

Spec models use RMSNorm; the baselines of variants.md §5 plug their mixers (and, for mamba2 and the
LSTM/GRU wrappers, LayerNorm) into the same module (``archdsl.lm.baselines``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from archdsl.errors import ArchdslError
from archdsl.lang.checker import DEFAULT_DEPTH, declarations, preset_depth
from archdsl.lang.parser import parse_file
from archdsl.lm import budget

VOCAB = budget.VOCAB
NORM_EPS = 1e-6


@dataclass
class ModelConfig:
    model: str = "e88"  # a spec path / bundled spec name, or a baseline (budget.BASELINES)
    preset: str | None = None  # a preset of the spec
    sets: dict[str, object] = field(default_factory=dict)  # spec hypers/choices, or a baseline's knobs
    dim: int | None = None  # width; None: the preset's / spec's default, or solved from `params`
    depth: int | None = None  # layers (llama: transformer blocks); None: the preset's depth, else 20
    params: int | None = None  # parameter budget; the width is solved when dim is None
    align: int = 1  # the solved width is a multiple of this (128 in the research code)
    backend: str = "reference"  # spec cell backend: "reference" | "triton"
    seed: int = 0  # initialisation seed
    tolerance: float = 0.1  # give up when no width lands within this fraction of `params`
    # (±10%: the research search's rule; the nearest count always wins)

    def __post_init__(self):
        if self.depth is None:
            self.depth = _preset_depth(self) or DEFAULT_DEPTH


def _preset_depth(cfg: ModelConfig) -> int | None:
    """A spec preset may name its depth (``depth = 32``); errors surface later, where they are located."""
    if cfg.preset is None or budget.is_baseline(cfg.model):
        return None
    try:
        return preset_depth(declarations(parse_file(budget.spec_path(cfg.model))), cfg.preset)
    except ArchdslError:
        return None


class TakeFirst(nn.Module):
    """A mixer whose module returns a tuple (a spec layer's (y, states), fla's (o, attn, cache))."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)[0]


def rms_norm(dim: int) -> nn.Module:
    return nn.RMSNorm(dim, eps=NORM_EPS)


def _normed(norm: nn.Module, r: torch.Tensor) -> torch.Tensor:
    # fp32 master weights: the norm runs in fp32; bf16 weights: in bf16 (the residual stays fp32)
    return norm(r.to(norm.weight.dtype))


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
            y = mixer(_normed(norm, r))  # [B, T, D]
        h = _normed(self.norm_f, r + y.float())
        return F.linear(h, self.embed.weight)  # [B, T, 256], tied head

    # ---- decoding (archdsl/lm/generate.py; spec layers only) ---------------------------------------
    def forward_state(self, idx: torch.Tensor, states: list | None = None, cu_seqlens=None):
        """idx [B, T] -> (logits [B, T, 256], one state dict per layer after the last byte);
        ``cu_seqlens``: idx [1, total] packs sequences, each from its own state (archdsl/packed.py)."""
        from archdsl.lm.generate import forward_state

        return forward_state(self, idx, states, cu_seqlens)

    def step(self, token: torch.Tensor, states: list | None = None):
        """One byte per row: token [B] -> (logits [B, 256], the states after it)."""
        from archdsl.lm.generate import step

        return step(self, token, states)

    def generate(self, prompt, n: int, temperature: float = 1.0, top_k: int | None = None, seed=None):
        """The prompt (str, bytes or [B, T] bytes) followed by ``n`` sampled bytes, of the same type."""
        from archdsl.lm.generate import generate

        return generate(self, prompt, n, temperature, top_k, seed)


# ---- building ------------------------------------------------------------------------------------
def build_model(cfg: ModelConfig) -> LanguageModel:
    """The LM for a config: a spec or a baseline; solves the width first when ``params`` is set."""
    if cfg.depth < 1:
        raise ArchdslError(f"depth must be at least 1, found {cfg.depth}")
    if cfg.dim is None and cfg.params is not None:
        cfg = budget.solve(cfg, cfg.params, cfg.tolerance)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if budget.is_baseline(cfg.model):
            from archdsl.lm import baselines

            model = baselines.build(cfg)
        else:
            model = _build_spec_lm(cfg)
    counted = budget.sizes(cfg).params
    if model.info["params"] != counted:  # a package version with other shapes than budget.py knows
        warnings.warn(
            f"{cfg.model}: built {model.info['params']:,} parameters, the budget solver counts {counted:,}",
            stacklevel=2,
        )
        model.info["params_counted"] = counted
    model.info["config"] = dataclasses.asdict(cfg)
    return model


def spec_mixers(cfg: ModelConfig) -> tuple[list[nn.Module], dict]:
    """One ``RecurrentLayer`` per layer (each with its own initialisation) and the info of the spec."""
    from archdsl.layer import BACKENDS, RecurrentLayer

    if cfg.backend not in BACKENDS:
        raise ArchdslError(f"unknown backend '{cfg.backend}'; choose one of {', '.join(BACKENDS)}")
    layer = budget.spec_layer(cfg)
    mixers = [TakeFirst(RecurrentLayer(layer, backend=cfg.backend)) for _ in range(cfg.depth)]
    info = {
        "model": cfg.model,
        "kind": "spec",
        "spec": str(budget.spec_path(cfg.model)),
        "preset": cfg.preset,
        "dim": layer.dim,
        "depth": cfg.depth,
        "expansion": layer.hypers.get("expansion"),
        "heads": layer.hypers.get("heads"),
        "n_state": layer.hypers.get("n"),
        "state_per_layer": layer.state_size(),
        "backend": cfg.backend,
        "hypers": dict(layer.hypers),
        "choices": dict(layer.choices),
        "spec_text": layer.source,
        "kernel_hash": layer.fingerprint(),
    }
    return mixers, info


def _build_spec_lm(cfg: ModelConfig) -> LanguageModel:
    mixers, info = spec_mixers(cfg)
    return LanguageModel(info["dim"], mixers, rms_norm, info)
