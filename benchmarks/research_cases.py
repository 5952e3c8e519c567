"""The cases of research_compare.py: each research layer, its spec and how the weights map.

A mapping row is (research parameter, [archdsl targets], layout): the research tensor, put through
``layout``, is split along its first axis over the targets in order. Targets: ``param:NAME`` (a spec
parameter), ``proj:OUT`` / ``bias:OUT`` (the rows of a projection's weight or bias that make the
output OUT) and ``out`` (the output projection). The research modules are imported lazily, from the
checkout that research_compare.py put on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

D = 6  # model width of the vector-state cases (expansion 1: d = 6)
N = 3  # state size of the matrix-state cases


def same(t: torch.Tensor) -> torch.Tensor:
    return t


def transpose(t: torch.Tensor) -> torch.Tensor:
    return t.t()


def first_output(m, x):
    return m(x)[0]


@dataclass
class Case:
    name: str
    research: str  # the research class, as the report names it
    spec: str
    sets: dict
    build: Callable[[], nn.Module]
    mapping: list[tuple[str, list[str], Callable]]
    run: Callable = first_output
    sn_vectors: list[str] = field(default_factory=list)  # research attributes holding u, in archdsl's order
    fix: Callable = lambda m: None  # after the nudge: keep a research value inside its domain
    no_grad: tuple[str, ...] = ()  # research parameters whose gradients are not compared (see note)
    note: str = ""
    count_note: str = ""  # why the parameter counts may differ
    context: Callable = contextlib.nullcontext  # around the research forward and backward
    layer_options: dict = field(default_factory=dict)  # RecurrentLayer's keyword arguments
    control: bool = False  # a non-default choice or setting, expected to differ (shows the check can fail)


@contextlib.contextmanager
def float_keeps_float64():
    """``Tensor.float()`` leaves a float64 tensor as it is: the research's E88 computes its decay in
    float32 (``self.A_log.float()``, e88_fla_hybrid.py 1375-1376) even in a float64 run; this
    measures the math and leaves that rounding (variants.md §7) out."""
    cast = torch.Tensor.float
    torch.Tensor.float = lambda t, *a, **k: t if t.dtype == torch.float64 else cast(t, *a, **k)
    try:
        yield
    finally:
        torch.Tensor.float = cast


def research(module: str, cls: str):
    return getattr(importlib.import_module(f"elman.models.{module}"), cls)


def io(inputs: list[str]) -> list:
    """The research layers' in_proj -> inputs and out_proj -> out rows."""
    return [("in_proj.weight", inputs, same), ("out_proj.weight", ["out"], same)]


# ---- vector-state layers (variants.md §2) ---------------------------------------------------------
def e1() -> Case:
    return Case(
        "E1",
        "MambaGatedElman (level 1), r_h_mode spectral_norm",
        "e1",
        {"dim": D, "expansion": 1},
        lambda: research("mamba_gated_elman", "MambaGatedElman")(
            dim=D, expansion=1.0, r_h_mode="spectral_norm"
        ),
        [
            *io(["proj:xt", "proj:z"]),
            ("cell.W_x", ["proj:wx"], same),
            ("cell.b", ["bias:wx"], same),
            ("cell.W_h", ["param:W_h"], same),
        ],
        sn_vectors=["cell._spectral_u"],
    )


def e10(wnorm: str) -> Case:
    mode = "spectral_norm" if wnorm == "spectral" else "none"
    return Case(
        f"E10 ({wnorm})",
        f"MultiScaleElman (level 10), r_h_mode {mode}",
        "e10",
        {"dim": D, "expansion": 1, "K": 2, "wnorm": wnorm},
        lambda: research("multiscale_elman", "MultiScaleElman")(
            dim=D, expansion=1.0, n_banks=2, r_h_mode=mode
        ),
        [
            *io(["proj:xt", "proj:z0", "proj:zm"]),
            ("cell.W_x", ["proj:wx"], same),
            ("cell.b", ["bias:wx"], same),
            ("cell.W_h", ["param:W_h"], same),
            ("cell.a", ["param:a"], same),
        ],
        sn_vectors=["cell._spectral_u"] if wnorm == "spectral" else [],
    )


def e42() -> Case:
    return Case(
        "E42",
        "E42LinearTied (level 42), r_h_mode spectral_norm",
        "e42",
        {"dim": D, "expansion": 1},
        lambda: research("e42_linear_tied", "E42LinearTied")(dim=D, expansion=1.0, r_h_mode="spectral_norm"),
        [*io(["proj:xt"]), ("cell.W", ["param:W"], same), ("cell.b", ["param:b"], same)],
        sn_vectors=["cell._spectral_u"],
    )


def e56() -> Case:
    return Case(
        "E56",
        "E56ConcatElman (level 56)",
        "e56",
        {"dim": D, "expansion": 1},
        lambda: research("e56_concat_elman", "E56ConcatElman")(dim=D, expansion=1.0),
        [
            *io(["proj:xt", "proj:z"]),
            ("cell.W", ["proj:wu", "param:W_h"], lambda w: torch.cat([w[:, :D], w[:, D:]])),  # W [x; h]
            ("cell.b", ["bias:wu"], same),
        ],
    )


#: level -> (module, class, [(research cell parameter, archdsl target, layout)])
GATED = {
    61: ("e61_decay_gated", "E61DecayGated", [("W_alpha", "proj:a"), ("b_alpha", "param:b_alpha"),
                                               ("W_v", "proj:v"), ("b_v", "param:b_v")]),
    62: ("e62_selective_write", "E62SelectiveWrite", [("W_k", "proj:wk"), ("b_k", "param:b_k"),
                                                      ("W_v", "proj:wv"), ("b_v", "param:b_v")]),
    63: ("e63_nonlinear_delta", "E63NonlinearDelta", [("W_alpha", "proj:a"), ("b_alpha", "param:b_alpha"),
                                                      ("W_h", "param:W_h"), ("W_x", "proj:wx"),
                                                      ("b", "param:b")]),
    64: ("e64_additive_h", "E64AdditiveH", [("W_alpha", "proj:a"), ("b_alpha", "param:b_alpha"),
                                            ("W_x", "proj:wx"), ("b", "param:b")]),
    65: ("e65_diagonal_h", "E65DiagonalH", [("W_alpha", "proj:a"), ("b_alpha", "param:b_alpha"),
                                            ("d_h", "param:d_h"), ("W_x", "proj:wx"), ("b", "param:b")]),
    66: ("e66_lowrank_h", "E66LowRankH", [("W_alpha", "proj:a"), ("b_alpha", "param:b_alpha"),
                                          ("V", "param:V", transpose), ("U", "param:U"),
                                          ("W_x", "proj:wx"), ("b", "param:b")]),
    67: ("e67_h_gated", "E67HGated", [("W_alpha", "proj:a"), ("d_alpha", "param:d_alpha"),
                                      ("b_alpha", "param:b_alpha"), ("W_x", "proj:wx"), ("b_v", "param:b")]),
    68: ("e68_self_gating", "E68SelfGating", [("W_alpha", "proj:a"), ("b_alpha", "param:b_alpha"),
                                              ("d_g", "param:d_g"), ("b_g", "param:b_g"),
                                              ("W_x", "proj:wx"), ("b_v", "param:b")]),
}  # fmt: skip


def gated(level: int) -> Case:
    module, cls, rows = GATED[level]
    mapping = [(f"cell.{r[0]}", [r[1]], r[2] if len(r) > 2 else same) for r in rows]
    return Case(
        f"E{level}",
        f"{cls} (level {level})",
        f"e{level}",
        {"dim": D, "expansion": 1},
        lambda: research(module, cls)(dim=D, expansion=1.0),
        [*io(["proj:xt"]), *mapping],
    )


# ---- single-matrix-state layers (variants.md §3) --------------------------------------------------
def matrix_case(level: int, module: str, cls: str, rows, **kw) -> Case:
    mapping = [(f"cell.{r}", [t], same) for r, t in rows]
    return Case(
        f"E{level}",
        f"{cls} (level {level})",
        f"e{level}",
        {"dim": D, "expansion": 1, "n": N},
        lambda: research(module, cls)(dim=D, expansion=1.0, n_state=N),
        [*io(["proj:xt"]), *mapping],
        **kw,
    )


def e70() -> Case:
    def fix(m):  # the research clamps its decay to [0, 0.999]; stay inside (a logit exists)
        m.cell.decay.clamp_(0.5, 0.99)

    rows = [("W_k.weight", "proj:k"), ("W_v.weight", "proj:v"), ("W_q.weight", "proj:q")]
    case = matrix_case(70, "e70_matrix_linear", "E70MatrixLinear", rows, fix=fix)
    case.mapping.append(("cell.decay", ["param:l"], lambda t: torch.logit(t / 0.999)))
    case.sn_vectors = ["cell._spectral_u_k", "cell._spectral_u_v"]
    case.no_grad = ("cell.decay",)
    case.note = "λ = clamp(decay) there, 0.999·σ(l) here: gradient of the decay not compared (variants.md §7)"
    return case


MATRIX = [
    (71, "e71_matrix_gated", "E71MatrixGated", [("W_k.weight", "proj:k"), ("W_v.weight", "proj:v"),
     ("W_q.weight", "proj:q"), ("W_alpha.weight", "proj:a"), ("d_alpha", "param:d_alpha"),
     ("b_alpha", "param:b_alpha")]),
    (72, "e72_matrix_selfgate", "E72MatrixSelfGate", [("W_k.weight", "proj:k"), ("W_v.weight", "proj:v"),
     ("W_q.weight", "proj:q"), ("W_alpha.weight", "proj:a"), ("d_g", "param:d_g"), ("b_g", "param:b_g"),
     ("b_alpha", "param:b_alpha")]),
    (73, "e73_matrix_nonlinear", "E73MatrixNonlinear", [("W_k", "proj:k"), ("W_v", "proj:v"),
     ("W_q", "proj:q"), ("W_z", "proj:wz"), ("b_z", "param:b_z")]),
]  # fmt: skip


def e75() -> Case:
    rows = [
        ("W_k", "proj:k"),
        ("W_v", "proj:v"),
        ("W_q", "proj:q"),
        ("W_beta", "proj:bl"),
        ("b_beta", "param:b_beta"),
    ]
    return Case(
        "E75",
        "E75MultiHead, 2 heads",
        "e75",
        {"dim": D, "expansion": 1, "heads": 2, "n": 8},
        lambda: research("e75_multihead", "E75MultiHead")(
            dim=D, expansion=1.0, n_heads=2, n_state=8, use_cuda=False
        ),
        [*io(["proj:xt"]), *((f"cell.{r}", [t], same) for r, t in rows)],
    )


# ---- E74 (variants.md §3) and E88 (§4) --------------------------------------------------------------
RESEARCH_PROJ = {"full": "full", "noz": "no_z", "tiedkq": "tied_kq", "tiedkvq": "tied_kvq"}


def e74(form: str, update: str, proj: str, nonlin: str) -> Case:
    z_read = proj == "full" and form == "full" and update == "delta"
    weights = {"full": ["k", "v", "q", "wz"] if z_read else ["k", "v", "q"], "noz": ["k", "v", "q"]}
    names = {"k": "W_k", "v": "W_v", "q": "W_q", "wz": "W_z"}
    if proj == "tiedkvq":
        mapping = [("cell.W", ["proj:w"], same)]
    elif proj == "tiedkq":
        mapping = [("cell.W_k", ["proj:k"], same), ("cell.W_v", ["proj:v"], same)]
    else:
        mapping = [(f"cell.{names[o]}", [f"proj:{o}"], same) for o in weights[proj]]
    if z_read:
        mapping.append(("cell.b_z", ["param:b_z"], same))
    if update == "simple":
        mapping.append(("cell.log_alpha", ["param:l"], same))

    def build():
        layer = importlib.import_module("train_e74").E74Layer
        kinds = (update, RESEARCH_PROJ[proj], "tanh" if nonlin == "tanh" else "linear", form)
        return layer(D, N, D, False, *kinds, 0.9)  # d_inner, n, dim, use_cuda, update, proj, nonlin, state

    return Case(
        f"E74 {form} {update} {proj} {nonlin}",
        "train_e74.E74Layer (in_proj, cell, out_proj)",
        "e74",
        {"dim": D, "expansion": 1, "n": N, "form": form, "update": update, "proj": proj, "nonlin": nonlin},
        build,
        [*io(["proj:xt"]), *mapping],
        run=lambda m, x: m(x.transpose(0, 1)).transpose(0, 1),
        count_note="(the research's W_z, b_z: computed, never read)" if proj == "full" and not z_read else "",
    )


def e88(gate: str, expansion: int, nonlin: str) -> Case:
    mapping = [
        ("qkv_proj.weight", ["proj:q", "proj:k", "proj:v"], same),
        ("a_proj.weight", ["proj:a"], same),
        ("A_log", ["param:A_log"], same),
        ("dt_bias", ["param:dt_bias"], same),
        ("o_proj.weight", ["out"], same),
    ]
    if gate != "none":
        mapping.append(("g_proj.weight", ["proj:g"], same))
    kw = dict(use_gate=gate != "none", gate_activation=gate if gate != "none" else "silu")
    return Case(
        f"E88 gate={gate} expansion={expansion} {nonlin}",
        "E88FLAHybrid, 2 heads, n 4 (a multiple of 4 there), PyTorch path",
        "e88",
        {"dim": D, "heads": 2, "n": 4, "expansion": expansion, "gate": gate, "nonlin": nonlin},
        lambda: research("e88_fla_hybrid", "E88FLAHybrid")(
            dim=D, expansion=float(expansion), n_state=4, n_heads=2, use_cuda=False,
            linear_state=nonlin == "identity", **kw,
        ),
        mapping,
        context=float_keeps_float64,
        note="its decay's float32 rounding left out (see float_keeps_float64)",
    )  # fmt: skip


E88_CONFIGS = [
    ("none", 1, "tanh"),
    ("silu", 1, "tanh"),
    ("sigmoid", 1, "tanh"),
    ("none", 2, "tanh"),
    ("none", 1, "identity"),
    ("sigmoid", 2, "tanh"),
    ("silu", 2, "identity"),
]


# ---- LSTM and GRU (variants.md §5): W_out cell(W_in x) -----------------------------------------------
class Mixer(nn.Module):
    """One layer of the research's LSTMLM / GRULM without its LayerNorm (which belongs to the model)."""

    def __init__(self, lm, cell: str):
        super().__init__()
        self.input_proj, self.cell, self.output_proj = (
            lm.input_projs[0],
            getattr(lm, cell)[0],
            lm.output_projs[0],
        )

    def forward(self, x):
        return self.output_proj(self.cell(self.input_proj(x))[0])


def rnn_case(kind: str) -> Case:
    gates = ["i", "f", "g", "o"] if kind == "lstm" else ["r", "z", "n"]
    module, cls, cell = {
        "lstm": ("lstm_baseline", "LSTMLM", "lstms"),
        "gru": ("gru_baseline", "GRULM", "grus"),
    }[kind]
    return Case(
        kind.upper(),
        f"{cls} (one layer: input_projs, {cell}, output_projs)",
        kind,
        {"dim": D, "expansion": 1},
        lambda: Mixer(research(module, cls)(vocab_size=256, dim=D, depth=1, expansion_factor=1.0), cell),
        [
            ("input_proj.weight", ["proj:u"], same),
            ("cell.weight_ih_l0", [f"proj:x{g}" for g in gates], same),
            ("cell.bias_ih_l0", [f"bias:x{g}" for g in gates], same),
            ("cell.weight_hh_l0", [f"param:W_h{g}" for g in gates], same),
            ("cell.bias_hh_l0", [f"param:b_h{g}" for g in gates], same),
            ("output_proj.weight", ["out"], same),
        ],
        run=lambda m, x: m(x),
    )


def controls() -> list[Case]:
    """Settings that are not the research's: each must show a difference."""
    one_iter = e1()
    one_iter.name, one_iter.control = "E1, spectral_iters=1 (control)", True
    one_iter.layer_options = {"spectral_iters": 1}
    silu = e74("full", "delta", "noz", "tanh")
    silu.name, silu.control = "E74 full delta noz tanh, input=silu (control)", True
    silu.sets = {**silu.sets, "input": "silu"}
    zall = e74("diagonal", "delta", "full", "tanh")
    zall.name, zall.control = "E74 diagonal delta full tanh, zuse=all (control)", True
    zall.sets = {**zall.sets, "zuse": "all"}
    zall.mapping = [*zall.mapping, ("cell.W_z", ["proj:wz"], same), ("cell.b_z", ["param:b_z"], same)]
    return [one_iter, silu, zall]


CASES: list[Case] = [
    e1(),
    e10("none"),
    e10("spectral"),
    e42(),
    e56(),
    *(gated(level) for level in GATED),
    e70(),
    *(matrix_case(*row) for row in MATRIX),
    e75(),
    *(
        e74(*c)
        for c in itertools.product(
            ("full", "diagonal"), ("delta", "simple"), RESEARCH_PROJ, ("tanh", "identity")
        )
    ),
    *(e88(*c) for c in E88_CONFIGS),
    rnn_case("lstm"),
    rnn_case("gru"),
    *controls(),
]
