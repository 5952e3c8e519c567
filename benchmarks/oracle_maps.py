"""How each zoo spec equals a library layer: the layer to build, and where every weight comes from.

One row per library parameter: ``(library name, sources)``. A source is a projection output of the
spec (its rows of the projection's weight; ``bias:NAME`` for its rows of the bias), a spec parameter,
or ``out`` (the output map). Several sources are concatenated along the first dimension, then
reshaped to the library's shape: the spec lays its tensors out in axis-declaration order, which is
the libraries' ``(heads, head_dim)`` order, and a convolution's window axis ``c`` comes last, as in
torch's ``Conv1d.weight[channel, 0, c]``. Gradients are compared through the same table.

``PRECISION`` says where a library computes at less than fp32 or with another epsilon, so that an
fp32 difference above 1e-4 is read with its reason.
"""

from __future__ import annotations

import importlib
import sys
import types


def _fla(name: str):
    return getattr(importlib.import_module("fla.layers"), name)


def _mamba(module: str, name: str):
    if "selective_scan_cuda" not in sys.modules:
        try:
            importlib.import_module("selective_scan_cuda")
        except ImportError:  # Mamba-1's CUDA scan; the oracle runs its reference scan instead
            sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
    return getattr(importlib.import_module(f"mamba_ssm.modules.{module}"), name)


def gdn(ir, mode: str = "chunk"):
    h, n = ir.hypers["heads"], ir.sizes["i"]
    return _fla("GatedDeltaNet")(
        hidden_size=ir.dim, expand_v=ir.hypers["expansion"], head_dim=n, num_heads=h,
        use_short_conv=True, conv_size=4, mode=mode,
    )  # fmt: skip


def mamba2(ir, mode: str = "chunk"):
    from archdsl.lm.baselines import import_mamba2

    Mamba2, _ = import_mamba2()
    return Mamba2(
        d_model=ir.dim, d_state=ir.sizes["s"], d_conv=4, expand=ir.hypers["expansion"],
        headdim=ir.sizes["p"], use_mem_eff_path=False,
    )  # fmt: skip


def gla(ir, mode: str = "chunk"):
    return _fla("GatedLinearAttention")(
        hidden_size=ir.dim, expand_k=0.5, expand_v=1.0, num_heads=ir.hypers["heads"],
        gate_low_rank_dim=ir.hypers["rank"], mode=mode,
    )  # fmt: skip


def deltanet(ir, mode: str = "chunk"):
    # fla's DeltaNet has heads of hidden_size / num_heads: the spec equals it where heads × n = dim
    heads = ir.hypers["heads"]
    n = ir.sizes["i"]
    assert heads * n == ir.dim, f"fla's DeltaNet needs heads x n = dim, found {heads} x {n} and {ir.dim}"
    return _fla("DeltaNet")(hidden_size=ir.dim, num_heads=heads, mode=mode)


def hgrn2(ir, mode: str = "chunk"):
    return _fla("HGRN2Attention")(hidden_size=ir.dim, expand_ratio=ir.hypers["expand"], mode=mode)


def kda(ir, mode: str = "chunk"):
    return _fla("KimiDeltaAttention")(
        hidden_size=ir.dim, expand_v=ir.hypers["expansion"], head_dim=ir.sizes["i"],
        num_heads=ir.hypers["heads"], use_short_conv=True, conv_size=4, mode=mode,
    )  # fmt: skip


def gated_deltaproduct(ir, mode: str = "chunk"):
    return _fla("GatedDeltaProduct")(
        hidden_size=ir.dim, expand_v=ir.hypers["expansion"], head_dim=ir.sizes["i"],
        num_heads=ir.hypers["heads"], num_householder=2, mode=mode,
    )  # fmt: skip


def mamba(ir, mode: str = "chunk"):
    Mamba = _mamba("mamba_simple", "Mamba")
    return Mamba(
        d_model=ir.dim, d_state=ir.sizes["s"], d_conv=4, expand=ir.hypers["expansion"],
        use_fast_path=False,
    )  # fmt: skip


def rwkv6(ir, mode: str = "chunk"):
    return _fla("RWKV6Attention")(
        hidden_size=ir.dim, expand_k=0.5, expand_v=1.0, num_heads=ir.hypers["heads"],
        proj_low_rank_dim=ir.hypers["rank"], gate_low_rank_dim=ir.hypers["rank_w"], mode=mode,
    )  # fmt: skip


def rwkv7(ir, mode: str = "chunk"):
    # layer_idx 0: the first layer's form (v_first = v, no v_lora), as the spec
    return _fla("RWKV7Attention")(
        hidden_size=ir.dim, head_dim=ir.sizes["i"], decay_low_rank_dim=ir.hypers["rank_w"],
        a_low_rank_dim=ir.hypers["rank_a"], gate_low_rank_dim=ir.hypers["rank_g"],
        layer_idx=0, num_hidden_layers=2, mode=mode,
    )  # fmt: skip


def retnet(ir, mode: str = "chunk"):
    return _fla("MultiScaleRetention")(
        hidden_size=ir.dim, expand_k=1.0, expand_v=2.0, num_heads=ir.hypers["heads"], mode=mode,
    )  # fmt: skip


#: spec -> (library and class, the spec's preset the library's 100M configuration is, builder, rows)
LAYERS = {
    "gdn": ("fla GatedDeltaNet", "GDN_100m", gdn, [
        ("q_proj.weight", ["q"]), ("k_proj.weight", ["k"]), ("v_proj.weight", ["v"]),
        ("g_proj.weight", ["g"]), ("a_proj.weight", ["a"]), ("b_proj.weight", ["b"]),
        ("A_log", ["A_log"]), ("dt_bias", ["dt_bias"]),
        ("q_conv1d.weight", ["conv_q"]), ("k_conv1d.weight", ["conv_k"]), ("v_conv1d.weight", ["conv_v"]),
        ("o_norm.weight", ["norm_w"]), ("o_proj.weight", ["out"]),
    ]),
    "mamba2": ("mamba_ssm Mamba2", "Mamba2_100m", mamba2, [
        ("in_proj.weight", ["z", "xs", "Bm", "Cm", "dt_raw"]),
        ("conv1d.weight", ["conv_x", "conv_B", "conv_C"]), ("conv1d.bias", ["conv_xb", "conv_Bb", "conv_Cb"]),
        ("dt_bias", ["dt_bias"]), ("A_log", ["A_log"]), ("D", ["D"]),
        ("norm.weight", ["norm_w"]), ("out_proj.weight", ["out"]),
    ]),
    "gla": ("fla GatedLinearAttention", "GLA_100m", gla, [
        ("q_proj.weight", ["q"]), ("k_proj.weight", ["k"]), ("v_proj.weight", ["v"]),
        ("g_proj.weight", ["g"]), ("gk_proj.0.weight", ["gl"]),
        ("gk_proj.1.weight", ["gk"]), ("gk_proj.1.bias", ["bias:gk"]),
        ("g_norm_swish_gate.weight", ["norm_w"]), ("o_proj.weight", ["out"]),
    ]),
    "deltanet": ("fla DeltaNet", "DeltaNet_100m", deltanet, [
        ("q_proj.weight", ["q"]), ("k_proj.weight", ["k"]), ("v_proj.weight", ["v"]),
        ("b_proj.weight", ["b"]),
        ("q_conv1d.weight", ["conv_q"]), ("k_conv1d.weight", ["conv_k"]), ("v_conv1d.weight", ["conv_v"]),
        ("o_norm.weight", ["norm_w"]), ("o_proj.weight", ["out"]),
    ]),
    "hgrn2": ("fla HGRN2Attention", "HGRN2_100m", hgrn2, [
        ("q_proj.weight", ["q"]), ("f_proj.weight", ["f"]), ("i_proj.weight", ["u"]),
        ("g_norm.weight", ["norm_w"]), ("o_proj.weight", ["out"]),
    ]),
    "kda": ("fla KimiDeltaAttention", "KDA_100m", kda, [
        ("q_proj.weight", ["q"]), ("k_proj.weight", ["k"]), ("v_proj.weight", ["v"]),
        ("b_proj.weight", ["b"]), ("f_proj.0.weight", ["fl"]), ("f_proj.1.weight", ["f"]),
        ("g_proj.0.weight", ["gl"]), ("g_proj.1.weight", ["go"]), ("g_proj.1.bias", ["bias:go"]),
        ("A_log", ["A_log"]), ("dt_bias", ["dt_bias"]),
        ("q_conv1d.weight", ["conv_q"]), ("k_conv1d.weight", ["conv_k"]), ("v_conv1d.weight", ["conv_v"]),
        ("o_norm.weight", ["norm_w"]), ("o_proj.weight", ["out"]),
    ]),
    "gated_deltaproduct": ("fla GatedDeltaProduct", "GatedDeltaProduct_100m", gated_deltaproduct, [
        ("q_proj.weight", ["q"]), ("k_proj.weight", ["k1", "k2"]), ("v_proj.weight", ["v1", "v2"]),
        ("b_proj.weight", ["b1", "b2"]), ("a_proj.weight", ["a"]),
        ("A_log", ["A_log"]), ("dt_bias", ["dt_bias"]),
        ("q_conv1d.weight", ["conv_q"]), ("k_conv1d.weight", ["conv_k1", "conv_k2"]),
        ("v_conv1d.weight", ["conv_v1", "conv_v2"]),
        ("g_proj.weight", ["g"]), ("o_norm.weight", ["norm_w"]), ("o_proj.weight", ["out"]),
    ]),
    "mamba": ("mamba_ssm Mamba", "Mamba_130m", mamba, [
        ("in_proj.weight", ["xs", "z"]),
        ("conv1d.weight", ["conv_w"]), ("conv1d.bias", ["conv_b"]),
        ("x_proj.weight", ["dtl", "Bm", "Cm"]),
        ("dt_proj.weight", ["dtr"]), ("dt_proj.bias", ["bias:dtr"]),
        ("A_log", ["A_log"]), ("D", ["D"]), ("out_proj.weight", ["out"]),
    ]),
    "retnet": ("fla MultiScaleRetention", "RetNet_100m", retnet, [
        ("q_proj.weight", ["q"]), ("k_proj.weight", ["k"]), ("v_proj.weight", ["v"]),
        ("g_proj.weight", ["g"]), ("g_norm_swish_gate.weight", ["norm_w"]), ("o_proj.weight", ["out"]),
    ]),
    "rwkv6": ("fla RWKV6Attention", "RWKV6_100m", rwkv6, [
        ("x_proj.0.mu", ["mu_x"]), ("x_proj.0.linear.weight", ["lr", "lw", "lk", "lv", "lg"]),
        ("x_proj.2.weight", ["er", "ew", "ek", "ev", "eg"]),
        ("x_bias", ["bias_r", "bias_w", "bias_k", "bias_v", "bias_g"]),
        ("r_proj.linear.weight", ["r"]), ("k_proj.linear.weight", ["k"]),
        ("v_proj.linear.weight", ["v"]), ("g_proj.linear.weight", ["g"]),
        ("w_proj.linear.lora.0.weight", ["wl"]), ("w_proj.linear.lora.2.weight", ["wz"]),
        ("w_proj.linear.lora.2.bias", ["bias:wz"]), ("bonus", ["u"]),
        ("g_norm.weight", ["gn_w"]), ("g_norm.bias", ["gn_b"]), ("o_proj.weight", ["out"]),
    ]),
    "rwkv7": ("fla RWKV7Attention", "RWKV7_100m", rwkv7, [
        ("x_r", ["mu_r"]), ("x_w", ["mu_w"]), ("x_k", ["mu_k"]), ("x_v", ["mu_v"]), ("x_a", ["mu_a"]),
        ("x_g", ["mu_g"]), ("k_k", ["k_k"]), ("k_a", ["k_a"]), ("r_k", ["r_k"]),
        ("r_proj.weight", ["r"]), ("k_proj.weight", ["k"]), ("v_proj.weight", ["v"]),
        ("w_lora.lora.0.weight", ["wl"]), ("w_lora.lora.2.weight", ["wz"]),
        ("w_lora.lora.2.bias", ["bias:wz"]),
        ("a_lora.lora.0.weight", ["al"]), ("a_lora.lora.2.weight", ["az"]),
        ("a_lora.lora.2.bias", ["bias:az"]),
        ("g_lora.lora.0.weight", ["gl"]), ("g_lora.lora.2.weight", ["g"]),
        ("g_norm.weight", ["gn_w"]), ("g_norm.bias", ["gn_b"]), ("o_proj.weight", ["out"]),
    ]),
}  # fmt: skip


def _blocks_last(w):
    """x_proj[2].weight [dim, 5 R] -> [5, dim, R]: RWKV-6's five rank-R maps, one block each."""
    return w.reshape(w.shape[0], 5, -1).transpose(0, 1)


#: library parameters whose layout is not the concatenation of the spec's tensors: spec -> name ->
#: the library tensor viewed in the spec's order (the oracle copies and compares through it)
VIEWS = {"rwkv6": {"x_proj.2.weight": _blocks_last}}

_TF32_L2 = "fla's chunked kernels multiply in TF32 on tensor cores; L2 norm eps inside the sqrt"
#: where the library is not an fp32 computation with the spec's epsilons
PRECISION = {
    "gdn": _TF32_L2,
    "deltanet": "fp32 against fla's fused_recurrent kernel (its chunk one refuses fp32); L2 eps in sqrt",
    "gla": "fla's chunked kernels multiply in TF32 on tensor cores",
    "hgrn2": "fla's chunked kernels multiply in TF32 on tensor cores",
    "mamba2": "mamba_ssm's SSD kernels multiply in TF32 on tensor cores",
    "kda": _TF32_L2,
    "gated_deltaproduct": _TF32_L2,
    "retnet": "fla's chunked kernels multiply in TF32 on tensor cores; its rotary tables in the input dtype",
    "rwkv6": "fla's chunked kernels multiply in TF32 on tensor cores",
    "rwkv7": "fla's chunked DPLR kernels multiply in TF32 on tensor cores",
}

#: fla layers whose chunked kernels refuse fp32: the fp32 comparison runs this mode instead (None:
#: the layer has no fp32 path with a backward, and only bf16 is compared)
FP32_MODE = {"deltanet": "fused_recurrent", "gated_deltaproduct": None}

#: specs of the zoo: (paper, library it is compared with or None and why)
PAPERS = {
    "gdn": "arXiv:2412.06464",
    "mamba2": "arXiv:2405.21060",
    "gla": "arXiv:2312.06635",
    "deltanet": "arXiv:2406.06484",
    "hgrn2": "arXiv:2404.07904",
    "mamba": "arXiv:2312.00752",
    "kda": "arXiv:2510.26692",
    "gated_deltaproduct": "arXiv:2502.10297",
    "mingru": "arXiv:2410.01201",
    "mlstm": "arXiv:2405.04517",
    "retnet": "arXiv:2307.08621",
    "rwkv6": "arXiv:2404.05892",
    "rwkv7": "arXiv:2503.14456",
    "m2rnn": "arXiv:2603.14360",
}
NO_LIBRARY = {
    "mingru": "no library layer",
    "mlstm": "xLSTM's mLSTM has no library layer here",
    "m2rnn": "no library layer here (XMA's M2RNN needs its own CUDA/Triton package)",
}
