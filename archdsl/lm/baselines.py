"""The baselines of variants.md §5 as mixers of the LM in ``archdsl.lm.model``.

- ``mamba2``: mamba-ssm's ``Mamba2`` (d_state 64, d_conv 4, expand 2, headdim 64) with LayerNorm.
- ``fla-gdn``: flash-linear-attention's ``GatedDeltaNet`` (head_dim 128, gate, short conv) in §1's LM.
- ``llama``: a pre-norm transformer block split into its two sub-layers, attention (RoPE θ = 1e4,
  head_dim 64, PyTorch's fused ``scaled_dot_product_attention``) and a SwiGLU FFN, each one mixer of
  §1's LM with its own RMSNorm: exactly one residual around each (the research code added a second).
- ``lstm`` / ``gru``: the bundled specs, ``x = x + W_out cell(W_in LayerNorm(x))`` (the spec holds
  W_in, the cell and W_out); ``nn-lstm`` / ``nn-gru``: the same wrapper around ``torch.nn.LSTM``/``GRU``
  (cuDNN on a GPU), as reference points.

Packages that are not installed raise ArchdslError naming the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import types

import torch
import torch.nn.functional as F
from torch import nn

from archdsl.errors import ArchdslError
from archdsl.lm import budget
from archdsl.lm.model import NORM_EPS, LanguageModel, ModelConfig, TakeFirst, rms_norm, spec_mixers

EXTRA = "pip install 'archdsl[baselines]'"
ROPE_THETA = 1e4


def layer_norm(dim: int) -> nn.Module:
    return nn.LayerNorm(dim, eps=NORM_EPS)


def _missing(model: str, package: str, err: Exception) -> ArchdslError:
    return ArchdslError(
        f"baseline '{model}' needs the package {package}, which cannot be imported "
        f"({type(err).__name__}: {err})",
        hint=f"install it with: {EXTRA} (it needs a CUDA GPU and a matching torch)",
    )


def _info(cfg: ModelConfig, s: budget.Sizes, backend: str) -> dict:
    return {
        "model": cfg.model,
        "kind": "baseline",
        "dim": s.dim,
        "depth": s.depth,
        "expansion": s.expansion,
        "heads": s.heads,
        "n_state": s.n_state,
        "state_per_layer": s.state_per_layer,
        "backend": backend,
        "spec_text": None,
        "kernel_hash": None,
    }


# ---- llama ---------------------------------------------------------------------------------------
def rope(x: torch.Tensor, theta: float = ROPE_THETA) -> torch.Tensor:
    """Rotary embedding, rotate-half form: x [B, H, T, hd] -> [B, H, T, hd]."""
    T, hd = x.shape[-2], x.shape[-1]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv = theta ** (-torch.arange(0, hd, 2, device=x.device, dtype=dtype) / hd)  # [hd/2]
    ang = torch.arange(T, device=x.device, dtype=dtype)[:, None] * inv  # [T, hd/2]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    """Causal multi-head self-attention with RoPE, no biases."""

    def __init__(self, dim: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = dim // head_dim, head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [3, B, H, T, hd]
        q, k, v = rope(qkv[0]), rope(qkv[1]), qkv[2]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, hd]
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


def _llama(cfg: ModelConfig, s: budget.Sizes, k: dict) -> LanguageModel:
    mixers: list[nn.Module] = []
    for _ in range(cfg.depth):
        mixers += [Attention(s.dim, k["head_dim"]), SwiGLU(s.dim, budget.llama_ffn(s.dim))]
    for m in mixers:  # GPT-2 style: N(0, 0.02), the projections back into the residual scaled down
        for name, p in m.named_parameters():
            std = 0.02 / math.sqrt(2 * cfg.depth) if name.startswith(("proj", "down")) else 0.02
            nn.init.normal_(p, 0.0, std)
    return LanguageModel(s.dim, mixers, rms_norm, _info(cfg, s, "torch sdpa"))


# ---- LSTM / GRU ----------------------------------------------------------------------------------
class TorchRNN(nn.Module):
    """``W_out cell(W_in x)`` with a torch.nn.LSTM/GRU cell (cuDNN on a GPU), initialised as the research's
    lstm_baseline.py / gru_baseline.py: W_in N(0, 0.02), the cell's weights orthogonal, biases zero but
    the LSTM's forget gate 1 in both biases, W_out zero."""

    def __init__(self, kind: str, dim: int, d: int):
        super().__init__()
        self.w_in = nn.Linear(dim, d, bias=False)
        self.cell = (nn.LSTM if kind == "lstm" else nn.GRU)(d, d, batch_first=True)
        self.w_out = nn.Linear(d, dim, bias=False)
        with torch.no_grad():
            nn.init.normal_(self.w_in.weight, 0.0, 0.02)
            nn.init.zeros_(self.w_out.weight)
            for w in (self.cell.weight_ih_l0, self.cell.weight_hh_l0):
                nn.init.orthogonal_(w)
            for b in (self.cell.bias_ih_l0, self.cell.bias_hh_l0):
                b.zero_()
                if kind == "lstm":
                    b[d : 2 * d] = 1.0  # gates (i, f, g, o): forget-gate bias 1 in each, 2 in effect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.cell(self.w_in(x))  # [B, T, d]
        return self.w_out(h)


def _torch_rnn(cfg: ModelConfig, s: budget.Sizes, k: dict) -> LanguageModel:
    d = int(round(k["expansion"] * s.dim))
    kind = cfg.model.removeprefix("nn-")
    mixers = [TorchRNN(kind, s.dim, d) for _ in range(cfg.depth)]
    return LanguageModel(s.dim, mixers, layer_norm, _info(cfg, s, f"torch.nn.{kind.upper()}"))


def _spec_rnn(cfg: ModelConfig) -> LanguageModel:
    mixers, info = spec_mixers(cfg)
    info["kind"] = "baseline"
    return LanguageModel(info["dim"], mixers, layer_norm, info)


# ---- mamba2 --------------------------------------------------------------------------------------
def torch_causal_conv1d(x, weight, bias=None, activation=None, seq_idx=None, **_):
    """What causal-conv1d's ``causal_conv1d_fn`` computes, in torch: x [B, C, T], weight [C, W]."""
    if seq_idx is not None:
        raise ArchdslError("packed sequences (seq_idx) need the causal-conv1d package")
    C, W = weight.shape
    y = F.conv1d(x, weight.unsqueeze(1), bias, padding=W - 1, groups=C)[..., : x.shape[-1]]
    return F.silu(y) if activation in ("silu", "swish") else y


def import_mamba2():
    """``(Mamba2, path)``. Without causal-conv1d, the split path with a torch causal convolution."""
    try:
        import causal_conv1d  # noqa: F401

        fused = True
    except ImportError:
        fused = False
    try:
        if importlib.util.find_spec("mamba_ssm") is None:
            raise ModuleNotFoundError("No module named 'mamba_ssm'")
        try:
            importlib.import_module("selective_scan_cuda")
        except ImportError:
            # mamba_ssm imports Mamba1's CUDA scan at package import; Mamba2 never calls it (Triton SSD)
            sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
        m2 = importlib.import_module("mamba_ssm.modules.mamba2")
    except Exception as e:  # ImportError, or a CUDA library that fails to load
        raise _missing("mamba2", "mamba-ssm", e) from None
    if fused:
        return m2.Mamba2, "mamba_ssm fused path (causal-conv1d + Triton SSD)"
    if m2.causal_conv1d_fn is None:  # the fallback conv of some mamba-ssm versions is broken
        m2.causal_conv1d_fn = torch_causal_conv1d
    return m2.Mamba2, "mamba_ssm split path (Triton SSD; torch causal conv: causal-conv1d missing)"


def _mamba2(cfg: ModelConfig, s: budget.Sizes, k: dict) -> LanguageModel:
    Mamba2, path = import_mamba2()
    mixers = [
        Mamba2(
            d_model=s.dim,
            d_state=k["n"],
            d_conv=k["conv"],
            expand=k["expansion"],
            headdim=k["head_dim"],
            use_mem_eff_path=path.startswith("mamba_ssm fused"),
        )
        for _ in range(cfg.depth)
    ]
    return LanguageModel(s.dim, mixers, layer_norm, _info(cfg, s, path))


# ---- fla-gdn -------------------------------------------------------------------------------------
FLA_HOPPER_HINT = (
    "install triton >= 3.7.1 (with a torch built for it), or set ARCHDSL_FLA_TRITON_BWD=1 to run fla's "
    "Triton backward anyway, only where its gradients were checked at the run's shapes "
    "(python benchmarks/kernels.py compares them); README.md, 'GPU set-up', says more"
)


def _check_fla_backward() -> None:
    """fla refuses GatedDeltaNet's backward on Hopper with triton in [3.4.0, 3.7.1) (its issue #640),
    at the first backward step; say so before the run, with what to do."""
    try:
        utils = importlib.import_module("fla.utils")
        affected = utils.IS_NVIDIA_HOPPER and utils.TRITON_ABOVE_3_4_0 and not utils.TRITON_ABOVE_3_7_1
    except (ImportError, AttributeError):
        return  # an fla without these flags: it has no such refusal
    if not affected:
        return
    try:  # fla runs its backward through TileLang instead where that backend can be used
        if importlib.import_module("fla.ops.common.backends.tilelang").TileLangBackend.can_use():
            return
    except Exception:  # noqa: S110 (no TileLang: fla will refuse)
        pass
    from importlib.metadata import version

    raise ArchdslError(
        f"fla-gdn: flash-linear-attention refuses GatedDeltaNet's backward on this Hopper GPU with "
        f"triton {version('triton')} (below 3.7.1: wrong gradients at some shapes, fla issue #640)",
        hint=FLA_HOPPER_HINT,
    )


def _fla_gdn(cfg: ModelConfig, s: budget.Sizes, k: dict) -> LanguageModel:
    try:
        GatedDeltaNet = importlib.import_module("fla.layers").GatedDeltaNet
    except Exception as e:
        raise _missing("fla-gdn", "flash-linear-attention (fla)", e) from None
    path = "fla chunk (Triton)"
    if os.environ.get("ARCHDSL_FLA_TRITON_BWD") != "1":
        _check_fla_backward()
    if os.environ.get("ARCHDSL_FLA_TRITON_BWD") == "1":
        # fla 0.6 refuses GatedDeltaNet's backward on Hopper with triton < 3.7.1 (its issue #640,
        # wrong gradients at some shapes). This runs its Triton path anyway: use it only where the
        # gradients were checked at the run's shapes (benchmarks/kernels.py does), and say so.
        importlib.import_module("fla.ops.common.chunk_o").TRITON_ABOVE_3_7_1 = True
        path += ", backward forced on Hopper (ARCHDSL_FLA_TRITON_BWD=1)"
    hd = k["head_dim"]
    mixers = [
        TakeFirst(
            GatedDeltaNet(
                hidden_size=s.dim,
                expand_v=k["expansion"],
                head_dim=hd,
                num_heads=s.dim // hd,
                use_gate=True,
                use_short_conv=True,
                conv_size=k["conv"],
                mode="chunk",
            )
        )
        for _ in range(cfg.depth)
    ]
    return LanguageModel(s.dim, mixers, rms_norm, _info(cfg, s, path))


BUILDERS = {
    "llama": _llama,
    "nn-lstm": _torch_rnn,
    "nn-gru": _torch_rnn,
    "mamba2": _mamba2,
    "fla-gdn": _fla_gdn,
}


def build(cfg: ModelConfig) -> LanguageModel:
    """A baseline's LM (``cfg.dim`` set or the research code's 100M width)."""
    if cfg.model in budget.SPEC_BASELINES:
        return _spec_rnn(cfg)
    s = budget.sizes(cfg)
    return BUILDERS[cfg.model](cfg, s, budget.knobs(cfg))
