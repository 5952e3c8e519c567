"""The baselines of variants.md §5, each as its parameter count beside its constructor.

- ``mamba2``: mamba-ssm's ``Mamba2`` (d_state 64, d_conv 4, expand 2, headdim 64) with LayerNorm.
- ``fla-gdn``: flash-linear-attention's ``GatedDeltaNet`` (head_dim 128, gate, short conv) in §1's LM.
- ``llama``: a pre-norm transformer block split into its two sub-layers, attention (RoPE θ = 1e4,
  head_dim 64, PyTorch's fused ``scaled_dot_product_attention``) and a SwiGLU FFN, each one mixer of
  §1's LM with its own RMSNorm: exactly one residual around each (the research code added a second).
- ``nn-lstm`` / ``nn-gru``: ``x = x + W_out cell(W_in LayerNorm(x))`` around ``torch.nn.LSTM``/``GRU``
  (cuDNN on a GPU), as reference points. (``lstm`` / ``gru``, the same wrapper around the bundled
  specs, are spec models: ``archdsl.lm.zoo`` builds them.)

A count is a closed formula of the module's shapes, so budgets are solved without torch or the
packages (``archdsl.lm.budget``; tests compare counts with built models). A constructor returns the
layer's mixers and a line naming the execution path; torch and the packages are imported only there.
Packages that are not installed raise ArchdslError naming the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

from archdsl.errors import ArchdslError

EXTRA = "pip install 'archdsl[baselines]'"


@dataclass(frozen=True)
class Mixer:
    """One layer's mixer of a baseline at a width: its parameters (without the LM's norms)."""

    params: int
    state: int | None
    heads: int | None = None
    n_state: int | None = None
    expansion: float | None = None


def _int_knob(model: str, k: dict, name: str) -> int:
    if k[name] != int(k[name]):
        raise ArchdslError(f"{model}: setting '{name}' must be an integer, found {k[name]}")
    return int(k[name])


def _missing(model: str, package: str, err: Exception) -> ArchdslError:
    return ArchdslError(
        f"baseline '{model}' needs the package {package}, which cannot be imported "
        f"({type(err).__name__}: {err})",
        hint=f"install it with: {EXTRA} (it needs a CUDA GPU and a matching torch)",
    )


# ---- mamba2 --------------------------------------------------------------------------------------
def mamba2_count(D: int, k: dict) -> Mixer | None:
    """mamba_ssm.Mamba2(d_model=D, d_state=n, d_conv=conv, expand=e, headdim=head_dim), ngroups 1."""
    d_inner, n, hd = _int_knob("mamba2", k, "expansion") * D, k["n"], k["head_dim"]
    if d_inner % hd:
        return None
    heads = d_inner // hd
    in_proj = D * (2 * d_inner + 2 * n + heads)  # [z, x, B, C, dt], no bias
    conv = (d_inner + 2 * n) * (k["conv"] + 1)  # depthwise Conv1d with bias
    params = in_proj + conv + 3 * heads + d_inner + d_inner * D  # dt_bias, A_log, D; gated norm; out_proj
    return Mixer(params, d_inner * n, heads, n, k["expansion"])


def mamba2_build(D: int, depth: int, k: dict) -> tuple[list, str]:
    Mamba2, path = import_mamba2()
    fused = path.startswith("mamba_ssm fused")
    mixers = [
        Mamba2(
            d_model=D,
            d_state=k["n"],
            d_conv=k["conv"],
            expand=k["expansion"],
            headdim=k["head_dim"],
            use_mem_eff_path=fused,
        )
        for _ in range(depth)
    ]
    return mixers, path


def _mamba2_step(k: dict) -> int:
    """Widths D with expand·D a multiple of head_dim."""
    return k["head_dim"] // math.gcd(k["head_dim"], _int_knob("mamba2", k, "expansion"))


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
        from archdsl.lm.blocks import torch_causal_conv1d

        m2.causal_conv1d_fn = torch_causal_conv1d
    return m2.Mamba2, "mamba_ssm split path (Triton SSD; torch causal conv: causal-conv1d missing)"


# ---- fla-gdn -------------------------------------------------------------------------------------
def fla_gdn_count(D: int, k: dict) -> Mixer | None:
    """fla.layers.GatedDeltaNet(hidden_size=D, expand_v=e, head_dim=hd, num_heads=D // hd,
    use_gate=True, use_short_conv=True, conv_size=conv), conv without bias."""
    hd = k["head_dim"]
    hv = hd * k["expansion"]
    if D % hd or hv != int(hv):
        return None
    heads, hv = D // hd, int(hv)
    key, value = heads * hd, heads * hv
    params = (
        2 * D * key
        + 3 * D * value  # q, k; v, g, o projections
        + 2 * D * heads
        + 2 * heads  # a, b projections; A_log, dt_bias
        + k["conv"] * (2 * key + value)
        + hv
    )  # short convolutions; gated output norm
    return Mixer(params, heads * hd * hv, heads, hd, k["expansion"])


def fla_gdn_build(D: int, depth: int, k: dict) -> tuple[list, str]:
    from archdsl.lm.blocks import TakeFirst

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
        # gradients were checked at the run's shapes (benchmarks/cell_bench.py does), and say so.
        importlib.import_module("fla.ops.common.chunk_o").TRITON_ABOVE_3_7_1 = True
        path += ", backward forced on Hopper (ARCHDSL_FLA_TRITON_BWD=1)"
    hd = k["head_dim"]
    layer = dict(hidden_size=D, expand_v=k["expansion"], head_dim=hd, num_heads=D // hd)
    gdn = dict(use_gate=True, use_short_conv=True, conv_size=k["conv"], mode="chunk")
    return [TakeFirst(GatedDeltaNet(**layer, **gdn)) for _ in range(depth)], path


FLA_HOPPER_HINT = (
    "install triton >= 3.7.1 (with a torch built for it), or set ARCHDSL_FLA_TRITON_BWD=1 to run fla's "
    "Triton backward anyway, only where its gradients were checked at the run's shapes "
    "(python benchmarks/cell_bench.py compares them); README.md, 'GPU set-up', says more"
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


# ---- llama ---------------------------------------------------------------------------------------
def llama_ffn(D: int) -> int:
    """SwiGLU hidden width: ceil((8/3) D / 256) * 256."""
    return -(-8 * D // (3 * 256)) * 256


def llama_count(D: int, k: dict) -> Mixer | None:
    """One pre-norm block: attention (q, k, v, o: 4D²) and a SwiGLU FFN (3·D·F), no biases."""
    if D % k["head_dim"]:
        return None
    return Mixer(4 * D * D + 3 * D * llama_ffn(D), None, D // k["head_dim"], None)


def llama_build(D: int, depth: int, k: dict) -> tuple[list, str]:
    from torch import nn

    from archdsl.lm.blocks import Attention, SwiGLU

    mixers: list[nn.Module] = []
    for _ in range(depth):
        mixers += [Attention(D, k["head_dim"]), SwiGLU(D, llama_ffn(D))]
    for m in mixers:  # GPT-2 style: N(0, 0.02), the projections back into the residual scaled down
        for name, p in m.named_parameters():
            std = 0.02 / math.sqrt(2 * depth) if name.startswith(("proj", "down")) else 0.02
            nn.init.normal_(p, 0.0, std)
    return mixers, "torch sdpa"


# ---- nn-lstm / nn-gru ----------------------------------------------------------------------------
def nn_rnn_count(gates: int, state_copies: int) -> Callable[[int, dict], Mixer | None]:
    def count(D: int, k: dict) -> Mixer | None:
        d = int(round(k["expansion"] * D))
        if d < 1:
            return None
        # W_in, W_out (no bias) + torch.nn.LSTM/GRU(d, d): W_ih, W_hh and two bias vectors
        return Mixer(2 * D * d + gates * (2 * d * d + 2 * d), state_copies * d, None, None, k["expansion"])

    return count


def nn_rnn_build(kind: str) -> Callable[[int, int, dict], tuple[list, str]]:
    def build(D: int, depth: int, k: dict) -> tuple[list, str]:
        from archdsl.lm.blocks import TorchRNN

        d = int(round(k["expansion"] * D))
        return [TorchRNN(kind, D, d) for _ in range(depth)], f"torch.nn.{kind.upper()}"

    return build


# ---- the table -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Baseline:
    knobs: dict[str, float]  # settings (``sets``) and their defaults
    count: Callable[[int, dict], Mixer | None]  # one layer's mixer at a width; None: not allowed
    build: Callable[[int, int, dict], tuple[list, str]]  # (width, depth, knobs) -> (mixers, path)
    default_dim: int  # the research code's 100M width
    norm: str = "rms"  # "rms" (variants.md §1) or "layer" (§5 wrappers)
    mixers_per_layer: int = 1  # llama: attention and FFN, each with its pre-norm
    step: Callable[[dict], int] = lambda k: 1  # widths are multiples of this


BASELINES: dict[str, Baseline] = {
    "mamba2": Baseline(
        {"expansion": 2, "n": 64, "head_dim": 64, "conv": 4},
        mamba2_count,
        mamba2_build,
        896,
        "layer",
        step=_mamba2_step,
    ),
    "fla-gdn": Baseline(
        {"expansion": 1, "head_dim": 128, "conv": 4},
        fla_gdn_count,
        fla_gdn_build,
        1024,
        step=lambda k: k["head_dim"],
    ),
    "llama": Baseline(
        {"head_dim": 64}, llama_count, llama_build, 640, mixers_per_layer=2, step=lambda k: k["head_dim"]
    ),
    "nn-lstm": Baseline({"expansion": 2}, nn_rnn_count(4, 2), nn_rnn_build("lstm"), 384, "layer"),
    "nn-gru": Baseline({"expansion": 2}, nn_rnn_count(3, 1), nn_rnn_build("gru"), 384, "layer"),
}
