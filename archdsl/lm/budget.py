"""Parameter accounting without building the model, and the budget solver (``--params 100M``).

A spec's count comes from its IR (``LayerIR.param_count``) plus the LM's terms (variants.md §1):
``256·D`` (embedding, tied head) + the final norm + per layer (norm + mixer). The baselines' counts are
closed formulas of their modules' shapes, each beside its constructor in ``archdsl.lm.baselines``, so
budgets can be solved where those packages are not installed; tests compare them with built models.

``solve`` finds the width whose count is nearest the budget, for the given heads / n / depth /
expansion. A spec's ``heads`` or ``n`` that neither the preset nor ``sets`` fixes is filled by the
"balanced" rule of variants.md §4, H·n ≈ D (with both free, n keeps its default).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from archdsl.args import parse_count  # noqa: F401 (the budget reads counts; kept importable here)
from archdsl.errors import ArchdslError, did_you_mean
from archdsl.ir import LayerIR
from archdsl.lang.checker import configure, declarations, instantiate
from archdsl.lang.specs_path import bundled  # noqa: F401 (bench lists the bundled specs from here)
from archdsl.lm.baselines import BASELINES, Baseline, Mixer, llama_ffn  # noqa: F401 (one place to look)
from archdsl.lm.config import MODELS, SPEC_BASELINES, VOCAB, is_baseline, load_spec, spec_path  # noqa: F401

MAX_DIM = 1 << 16  # the solver's widest width


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
    return instantiate(load_spec(cfg.model), cfg.preset, overrides).layer


def lm_params(dim: int, depth: int, mixer_params: int, norm: str = "rms", mixers_per_layer: int = 1) -> int:
    """Embedding (tied head) + final norm + per mixer (its pre-norm + the mixer)."""
    n = dim * (2 if norm == "layer" else 1)  # LayerNorm has a bias, RMSNorm has not
    return VOCAB * dim + n + depth * (mixers_per_layer * n + mixer_params)


def sizes(cfg, dim: int | None = None, sets: dict | None = None) -> Sizes:
    """Exact sizes of a config (``dim``/``sets`` replace the config's), without building anything."""
    if cfg.model in BASELINES:
        return baseline_sizes(cfg, dim, sets)
    return spec_sizes(cfg, spec_layer(cfg, dim, sets))


def baseline_sizes(cfg, dim: int | None = None, sets: dict | None = None) -> Sizes:
    base = BASELINES[cfg.model]
    k = knobs(cfg if sets is None else dataclasses.replace(cfg, sets=sets))
    D = dim or cfg.dim or base.default_dim
    m = base.count(D, k)
    if m is None:
        raise ArchdslError(
            f"{cfg.model}: width {D} is not allowed; it must be a multiple of "
            f"{base.step(k)} ({', '.join(f'{a}={b}' for a, b in k.items())})"
        )
    params = lm_params(D, cfg.depth, m.params, base.norm, base.mixers_per_layer)
    return Sizes(params, D, cfg.depth, m.expansion, m.heads, m.n_state, m.state)


def spec_sizes(cfg, layer: LayerIR) -> Sizes:
    """The sizes of a spec config whose layer is already instantiated (``spec_layer``)."""
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
        return (sizes(cfg, D), dict(cfg.sets)) if base.count(D, k) is not None else None

    fixed = ", ".join(f"{a} {b}" for a, b in k.items())
    return _Plan(at, math.lcm(cfg.align, base.step(k)), fixed)


def _spec_plan(cfg) -> _Plan:
    decl = declarations(load_spec(cfg.model))
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
    found = _nearest(plan, budget)
    if (found is None or abs(found[0].params - budget) > tolerance * budget) and (
        step := _probe_step(plan)
    ) not in (None, plan.step):
        # allowed widths further apart than the search looks ahead (a `require dim % 64 == 0`): the
        # search stepped over them; search their multiples instead
        plan = dataclasses.replace(plan, step=math.lcm(plan.step, step))
        found = _nearest(plan, budget)
    if found is None:
        raise ArchdslError(
            f"{cfg.model}: no width up to {MAX_DIM} is allowed ({plan.fixed}, multiples of {plan.step})"
        )
    got, sets, search, near = found
    if abs(got.params - budget) > tolerance * budget:
        raise ArchdslError(_unreachable(cfg, budget, tolerance, plan, search, near))
    return dataclasses.replace(cfg, dim=got.dim, sets=sets, params=budget)


def _nearest(plan: _Plan, budget: int):
    """(sizes, sets, search, the allowed widths searched) of the width whose count is nearest the
    budget, or None when no width near it is allowed."""
    search = _Search(plan)
    near = search.allowed_near(search.first_above(budget))
    if not near:
        return None
    options = [o for j in near for o in (plan.options(j * plan.step) if plan.options else [search.point(j)])]
    got, sets = min(options, key=lambda o: (abs(o[0].params - budget), o[0].dim))
    return got, sets, search, near


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
