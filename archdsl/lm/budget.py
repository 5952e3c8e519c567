"""Parameter accounting without building the model, and the budget solver (``--params 100M``).

A spec's count comes from its IR (``LayerIR.param_count``) plus the LM's terms (variants.md §1):
``256·D`` (embedding, tied head) + the final norm + per layer (norm + mixer). The baselines' counts are
closed formulas of their modules' shapes (mamba-ssm's ``Mamba2``, fla's ``GatedDeltaNet``, ...), so
budgets can be solved where those packages are not installed; tests compare them with built models.

``solve`` finds the width whose count is nearest the budget, for the given heads / n / depth /
expansion. A spec's ``heads`` or ``n`` that neither the preset nor ``sets`` fixes is filled by the
"balanced" rule of variants.md §4, H·n ≈ D (with both free, n keeps its default).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from archdsl.args import parse_count  # noqa: F401 (the budget reads counts; kept importable here)
from archdsl.errors import ArchdslError, did_you_mean
from archdsl.ir import LayerIR
from archdsl.lang.checker import configure, declarations, instantiate
from archdsl.lang.parser import parse_file
from archdsl.lang.specs_path import bundled, resolve_spec

VOCAB = 256
MAX_DIM = 1 << 16  # the solver's widest width
#: bundled specs that are baselines: their LM is variants.md §5's LayerNorm wrapper
SPEC_BASELINES = ("lstm", "gru")


@dataclass(frozen=True)
class Sizes:
    """What a configuration amounts to (the columns of the results table)."""

    params: int
    dim: int
    depth: int
    expansion: float | None
    heads: int | None
    n_state: int | None
    state_per_layer: int | None  # floats of recurrent state per layer and sequence (None: attention)


@dataclass(frozen=True)
class Mixer:
    """One layer's mixer of a baseline at a width: its parameters (without the LM's norms)."""

    params: int
    state: int | None
    heads: int | None = None
    n_state: int | None = None
    expansion: float | None = None


def _mamba2(D: int, k: dict) -> Mixer | None:
    """mamba_ssm.Mamba2(d_model=D, d_state=n, d_conv=conv, expand=e, headdim=head_dim), ngroups 1."""
    d_inner, n, hd = _int_knob("mamba2", k, "expansion") * D, k["n"], k["head_dim"]
    if d_inner % hd:
        return None
    heads = d_inner // hd
    in_proj = D * (2 * d_inner + 2 * n + heads)  # [z, x, B, C, dt], no bias
    conv = (d_inner + 2 * n) * (k["conv"] + 1)  # depthwise Conv1d with bias
    params = in_proj + conv + 3 * heads + d_inner + d_inner * D  # dt_bias, A_log, D; gated norm; out_proj
    return Mixer(params, d_inner * n, heads, n, k["expansion"])


def _int_knob(model: str, k: dict, name: str) -> int:
    if k[name] != int(k[name]):
        raise ArchdslError(f"{model}: setting '{name}' must be an integer, found {k[name]}")
    return int(k[name])


def _mamba2_step(k: dict) -> int:
    """Widths D with expand·D a multiple of head_dim."""
    return k["head_dim"] // math.gcd(k["head_dim"], _int_knob("mamba2", k, "expansion"))


def _fla_gdn(D: int, k: dict) -> Mixer | None:
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


def llama_ffn(D: int) -> int:
    """SwiGLU hidden width: ceil((8/3) D / 256) * 256."""
    return -(-8 * D // (3 * 256)) * 256


def _llama(D: int, k: dict) -> Mixer | None:
    """One pre-norm block: attention (q, k, v, o: 4D²) and a SwiGLU FFN (3·D·F), no biases."""
    if D % k["head_dim"]:
        return None
    return Mixer(4 * D * D + 3 * D * llama_ffn(D), None, D // k["head_dim"], None)


def _torch_rnn(gates: int, state_copies: int) -> Callable[[int, dict], Mixer | None]:
    def mixer(D: int, k: dict) -> Mixer | None:
        d = int(round(k["expansion"] * D))
        if d < 1:
            return None
        # W_in, W_out (no bias) + torch.nn.LSTM/GRU(d, d): W_ih, W_hh and two bias vectors
        return Mixer(2 * D * d + gates * (2 * d * d + 2 * d), state_copies * d, None, None, k["expansion"])

    return mixer


@dataclass(frozen=True)
class Baseline:
    knobs: dict[str, float]  # settings (``sets``) and their defaults
    mixer: Callable[[int, dict], Mixer | None]  # None: this width is not allowed
    default_dim: int  # the research code's 100M width
    norm: str = "rms"  # "rms" (variants.md §1) or "layer" (§5 wrappers)
    mixers_per_layer: int = 1  # llama: attention and FFN, each with its pre-norm
    step: Callable[[dict], int] = lambda k: 1  # widths are multiples of this


BASELINES: dict[str, Baseline] = {
    "mamba2": Baseline(
        {"expansion": 2, "n": 64, "head_dim": 64, "conv": 4}, _mamba2, 896, "layer", step=_mamba2_step
    ),
    "fla-gdn": Baseline(
        {"expansion": 1, "head_dim": 128, "conv": 4}, _fla_gdn, 1024, step=lambda k: k["head_dim"]
    ),
    "llama": Baseline({"head_dim": 64}, _llama, 640, mixers_per_layer=2, step=lambda k: k["head_dim"]),
    "nn-lstm": Baseline({"expansion": 2}, _torch_rnn(4, 2), 384, "layer"),
    "nn-gru": Baseline({"expansion": 2}, _torch_rnn(3, 1), 384, "layer"),
}
MODELS = (*BASELINES, *SPEC_BASELINES)


def is_baseline(name: str) -> bool:
    return name in BASELINES or name in SPEC_BASELINES


def spec_path(name: str) -> Path:
    try:
        return resolve_spec(name)
    except ArchdslError:
        if name.endswith(".rnn") or Path(name).exists():
            raise
        raise ArchdslError(
            f"'{name}' is neither a spec file, a bundled spec nor a baseline",
            hint=did_you_mean(name, [*bundled(), *BASELINES], "specs and baselines"),
        ) from None


@functools.lru_cache(maxsize=64)
def _parse(path: str, mtime_ns: int):
    return parse_file(path)


def _spec(name: str):
    p = spec_path(name)
    return _parse(str(p), p.stat().st_mtime_ns)


def knobs(cfg) -> dict:
    """A baseline's settings: its defaults overridden by ``cfg.sets`` (unknown names are errors)."""
    base = BASELINES[cfg.model]
    out = dict(base.knobs)
    for key, value in cfg.sets.items():
        if key not in out:
            raise ArchdslError(
                f"unknown setting '{key}' for baseline '{cfg.model}'", hint=did_you_mean(key, out, "settings")
            )
        try:
            num = float(value)
        except (TypeError, ValueError):
            raise ArchdslError(f"setting '{key}' of '{cfg.model}' needs a number, found '{value}'") from None
        if num <= 0:
            raise ArchdslError(f"setting '{key}' of '{cfg.model}' must be positive, found {value}")
        if key != "expansion" and num != int(num):
            raise ArchdslError(f"setting '{key}' of '{cfg.model}' must be an integer, found {value}")
        out[key] = int(num) if num == int(num) else num
    return out


def spec_layer(cfg, dim: int | None = None, sets: dict | None = None) -> LayerIR:
    """The layer IR of a spec config (``dim``/``sets`` replace the config's)."""
    overrides = dict(cfg.sets if sets is None else sets)
    dim = cfg.dim if dim is None else dim
    if dim is not None:
        overrides["dim"] = dim
    return instantiate(_spec(cfg.model), cfg.preset, overrides).layer


def lm_params(dim: int, depth: int, mixer_params: int, norm: str = "rms", mixers_per_layer: int = 1) -> int:
    """Embedding (tied head) + final norm + per mixer (its pre-norm + the mixer)."""
    n = dim * (2 if norm == "layer" else 1)  # LayerNorm has a bias, RMSNorm has not
    return VOCAB * dim + n + depth * (mixers_per_layer * n + mixer_params)


def sizes(cfg, dim: int | None = None, sets: dict | None = None) -> Sizes:
    """Exact sizes of a config (``dim``/``sets`` replace the config's), without building anything."""
    if cfg.model in BASELINES:
        base = BASELINES[cfg.model]
        k = knobs(cfg if sets is None else dataclasses.replace(cfg, sets=sets))
        D = dim or cfg.dim or base.default_dim
        m = base.mixer(D, k)
        if m is None:
            raise ArchdslError(
                f"{cfg.model}: width {D} is not allowed; it must be a multiple of "
                f"{base.step(k)} ({', '.join(f'{a}={b}' for a, b in k.items())})"
            )
        params = lm_params(D, cfg.depth, m.params, base.norm, base.mixers_per_layer)
        return Sizes(params, D, cfg.depth, m.expansion, m.heads, m.n_state, m.state)
    layer = spec_layer(cfg, dim, sets)
    norm = "layer" if cfg.model in SPEC_BASELINES else "rms"
    params, h = lm_params(layer.dim, cfg.depth, layer.param_count(), norm), layer.hypers
    return Sizes(
        params, layer.dim, cfg.depth, h.get("expansion"), h.get("heads"), h.get("n"), layer.state_size()
    )


# ---- the solver ----------------------------------------------------------------------------------
@dataclass
class _Plan:
    """How a config's sizes follow from its width."""

    at: Callable[[int], tuple[Sizes, dict] | None]  # width -> (sizes, sets), None if not allowed
    step: int  # widths are multiples of this
    fixed: str  # what the solver keeps, for messages
    # width -> every (sizes, sets) worth comparing there (a balanced heads/n rounded down and up)
    options: Callable[[int], list[tuple[Sizes, dict]]] | None = None


def _baseline_plan(cfg) -> _Plan:
    base = BASELINES[cfg.model]
    k = knobs(cfg)

    def at(D: int):
        return (sizes(cfg, D), dict(cfg.sets)) if base.mixer(D, k) is not None else None

    fixed = ", ".join(f"{a} {b}" for a, b in k.items())
    return _Plan(at, math.lcm(cfg.align, base.step(k)), fixed)


def _spec_plan(cfg) -> _Plan:
    decl = declarations(_spec(cfg.model))
    hypers, _ = configure(decl, cfg.preset, cfg.sets)  # the user's errors surface here
    given = set(cfg.sets) | ({s.name for s in decl.presets[cfg.preset].settings} if cfg.preset else set())
    free = [h for h in ("heads", "n") if h in decl.hypers and h not in given]
    # balanced (H·n ≈ D): heads = D / n when heads is free (n keeps its value), else n = D / heads
    solved, other = ("heads", "n") if "heads" in free else ("n", "heads") if free else (None, None)
    if solved and other not in hypers:
        solved = None
    if solved and not (isinstance(hypers[other], (int, float)) and hypers[other] > 0):
        raise ArchdslError(
            f"{other} must be positive to solve {solved} from the width, found {hypers[other]}"
        )

    def sets_at(D: int, rounding=round) -> dict:
        s = dict(cfg.sets)
        if solved:
            s[solved] = max(1, int(rounding(D / hypers[other])))
        return s

    def at(D: int, rounding=round):
        s = sets_at(D, rounding)
        try:
            return sizes(cfg, D, s), s
        except ArchdslError:  # e.g. a 'require' fails at this width
            return None

    def options(D: int):
        found = [at(D, r) for r in ((math.floor, math.ceil) if solved else (round,))]
        return [f for f in found if f is not None]

    kept = [f"{h} {hypers[h]}" for h in ("heads", "n", "expansion") if h in hypers and h != solved]
    kept += [f"{solved} balanced (H·n ≈ D)"] if solved else []
    return _Plan(at, cfg.align, ", ".join(kept), options)


class _Search:
    """Widths k·step, k = 1 … kmax; counts grow with k (the balanced heads/n grow with the width)."""

    WINDOW = 32  # how far past a width that is not allowed to look for one that is

    def __init__(self, plan: _Plan):
        self.plan, self.kmax, self.cache = plan, max(1, MAX_DIM // plan.step), {}

    def point(self, k: int):
        if k not in self.cache:
            self.cache[k] = self.plan.at(k * self.plan.step)
        return self.cache[k]

    def next_allowed(self, k: int) -> int | None:
        for j in range(k, min(k + self.WINDOW, self.kmax) + 1):
            if self.point(j) is not None:
                return j
        return None

    def first_above(self, budget: int) -> int:
        """The smallest k whose next allowed width counts more than the budget (kmax + 1: none)."""
        lo, hi = 1, self.kmax + 1
        while lo < hi:
            mid = (lo + hi) // 2
            j = self.next_allowed(mid)
            if j is None or self.point(j)[0].params > budget:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def allowed_near(self, k: int, radius: int = 4) -> list[int]:
        ks = range(max(1, k - radius), min(self.kmax, k + radius) + 1)
        return [j for j in ks if self.point(j) is not None]

    def extreme(self, last: bool) -> int | None:
        ks = range(self.kmax, 0, -1) if last else range(1, self.kmax + 1)
        return next((j for j in ks if self.point(j) is not None), None)


def solve(cfg, budget: int, tolerance: float = 0.01):
    """The config with its width (and any free heads/n) set so the count is nearest ``budget``.

    Raises ArchdslError when no width lands within ``tolerance`` (a fraction) of the budget, naming
    the nearest counts and the smallest and largest reachable ones."""
    budget = parse_count(budget)
    if cfg.depth < 1:
        raise ArchdslError(f"depth must be at least 1, found {cfg.depth}")
    if cfg.align < 1:
        raise ArchdslError(f"align must be a positive integer, found {cfg.align}")
    plan = _baseline_plan(cfg) if cfg.model in BASELINES else _spec_plan(cfg)
    search = _Search(plan)
    k = search.first_above(budget)
    near = search.allowed_near(k)
    if not near and (step := _probe_step(plan)) is not None:
        # widths further apart than the search looks ahead (a `require dim % 128 == 0`): search those
        plan = dataclasses.replace(plan, step=math.lcm(plan.step, step))
        search = _Search(plan)
        k = search.first_above(budget)
        near = search.allowed_near(k)
    if not near:
        raise ArchdslError(
            f"{cfg.model}: no width up to {MAX_DIM} is allowed ({plan.fixed}, multiples of {plan.step})"
        )
    options = [o for j in near for o in (plan.options(j * plan.step) if plan.options else [search.point(j)])]
    got, sets = min(options, key=lambda o: (abs(o[0].params - budget), o[0].dim))
    if abs(got.params - budget) > tolerance * budget:
        raise ArchdslError(_unreachable(cfg, budget, tolerance, plan, search, near))
    return dataclasses.replace(cfg, dim=got.dim, sets=sets, params=budget)


def _probe_step(plan: _Plan, widths: int = 4096) -> int | None:
    """The spacing of the allowed widths when they are sparse (a spec requiring ``dim % 128 == 0``):
    the gcd of the first three allowed multiples of the plan's step, None when fewer exist."""
    found = []
    for D in range(plan.step, widths + 1, plan.step):
        if plan.at(D) is not None:
            found.append(D)
            if len(found) == 3:
                return math.gcd(*found)
    return None


def _unreachable(cfg, budget, tolerance, plan, search, near) -> str:
    def at(j):
        return f"{search.point(j)[0].params:,} (dim {j * plan.step})"

    below = [j for j in near if search.point(j)[0].params <= budget]
    above = [j for j in near if search.point(j)[0].params > budget]
    nearest = " and ".join(at(j) for j in ([below[-1]] if below else []) + ([above[0]] if above else []))
    lo, hi = search.extreme(last=False), search.extreme(last=True)
    return (
        f"{cfg.model}: no width gives {budget:,} parameters within {tolerance:.1%} (depth {cfg.depth}, "
        f"{plan.fixed}, dim a multiple of {plan.step}); the nearest are {nearest}; the smallest "
        f"reachable count is {at(lo)} and the largest {at(hi)}"
    )


def describe(cfg, budget: int | None = None) -> str:
    """One line: the sizes of a config, and how far they are from a budget."""
    s = sizes(cfg)
    parts = [f"dim {s.dim}", f"depth {s.depth}"]
    parts += [
        f"{name} {v}"
        for name, v in (("heads", s.heads), ("n", s.n_state), ("expansion", s.expansion))
        if v is not None
    ]
    line = f"{cfg.model}: {', '.join(parts)}: {s.params:,} parameters"
    if budget:
        line += f" (budget {budget:,}: {100 * (s.params - budget) / budget:+.2f}%)"
    state = "none (attention: a KV cache)" if s.state_per_layer is None else f"{s.state_per_layer:,} floats"
    return f"{line}; state per layer {state}"
