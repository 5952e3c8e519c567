"""The torch modules the LM is made of besides a spec's layer: norms, the llama blocks, the LSTM/GRU
wrapper, a torch causal convolution for mamba-ssm, and ``TakeFirst`` for mixers that return tuples."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archdsl.errors import ArchdslError

NORM_EPS = 1e-6
ROPE_THETA = 1e4


def rms_norm(dim: int) -> nn.Module:
    return nn.RMSNorm(dim, eps=NORM_EPS)


def layer_norm(dim: int) -> nn.Module:
    return nn.LayerNorm(dim, eps=NORM_EPS)


NORMS = {"rms": rms_norm, "layer": layer_norm}


def normed(norm: nn.Module, r: torch.Tensor) -> torch.Tensor:
    # fp32 master weights: the norm runs in fp32; bf16 weights: in bf16 (the residual stays fp32)
    return norm(r.to(norm.weight.dtype))


class TakeFirst(nn.Module):
    """A mixer whose module returns a tuple (a spec layer's (y, states), fla's (o, attn, cache))."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)[0]


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


# ---- mamba2 --------------------------------------------------------------------------------------
def torch_causal_conv1d(x, weight, bias=None, activation=None, seq_idx=None, **_):
    """What causal-conv1d's ``causal_conv1d_fn`` computes, in torch: x [B, C, T], weight [C, W]."""
    if seq_idx is not None:
        raise ArchdslError("packed sequences (seq_idx) need the causal-conv1d package")
    C, W = weight.shape
    y = F.conv1d(x, weight.unsqueeze(1), bias, padding=W - 1, groups=C)[..., : x.shape[-1]]
    return F.silu(y) if activation in ("silu", "swish") else y
