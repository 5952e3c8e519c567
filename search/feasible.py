"""The feasible region of a search space: the configurations whose width can be solved to the budget.

Every trial's width is solved from the parameter budget, but not every point of a space has a width
that lands within the tolerance: at 100K parameters and depth 20, ``heads 100`` counts more than the
budget at width 1, and where one step of the width adds more than twice the tolerance, half of the
points fall between two widths. This module enumerates the dimensions that change the parameter count
(integers and sets; ``lr`` and other real numbers do not take part), decides each point up front and
hands the sampler only the points that can run.

A spec's count is the polynomial the checker derives (``instantiate(...).formula``) in its hypers and
the width, evaluated for the whole grid at once; it is checked against the exact count at a few points
of every combination of choices, and where it is not exact (a size that is not a polynomial, a choice
of branch by a number, a balanced heads/n solved from the width) the budget solver decides each point.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from dataclasses import dataclass, field

import numpy as np
import optuna

from archdsl.errors import ArchdslError
from archdsl.lang.checker import configure, declarations, instantiate
from archdsl.lm.budget import BASELINES, MAX_DIM, SPEC_BASELINES, VOCAB, load_spec, sizes, solve

from .space import DEFAULT_DEPTH, KNOBS, ModelSpace, Space

#: more points than this in one model's grid are not enumerated (the sampler is then unconstrained)
MAX_POINTS = 2_000_000
#: points the slow path (the budget solver, ~40 ms a point) decides at most, per model
MAX_SOLVED = 400
#: the narrowest width a trial may be solved to: below it (at a small budget with many heads, a width of
#: 1 meets the count) the "language model" embeds each byte in a handful of numbers and its state
#: dwarfs it, so such a trial measures nothing and can take longer than its whole budget to set up
MIN_DIM = 16
CHECKS = 3  # points of each combination of choices where the polynomial is compared with the count


@dataclass
class Region:
    """One model's feasible points: ``names`` (Optuna parameter names) and one value tuple a point."""

    model: str
    names: tuple[str, ...]
    points: list[tuple]
    total: int  # points in the model's grid
    nearest: tuple | None = None  # (relative error, point dict, dim) of the closest infeasible point
    smallest: tuple | None = None  # (count at the smallest width, point dict)
    unchecked: str = ""  # why the region was not solved (then every point counts as feasible)
    ranges: frozenset = frozenset()  # names that are integer ranges (shown as LOW..HIGH)


@dataclass
class Feasible:
    """The feasible points of every model of a space, at a budget and tolerance."""

    budget: int
    tolerance: float
    regions: list[Region] = field(default_factory=list)
    several: bool = False  # several models: the model is itself a parameter ("model")

    def constrained(self) -> set[str]:
        out = {n for r in self.regions for n in r.names}
        return out | ({"model"} if self.several else set())

    def candidates(self, assigned: dict) -> list[dict]:
        """The feasible points that agree with ``assigned`` on every constrained name it gives."""
        out = []
        for r in self.regions:
            if self.several and assigned.get("model", r.model) != r.model:
                continue
            keys = [(i, assigned[n]) for i, n in enumerate(r.names) if n in assigned]
            base = {"model": r.model} if self.several else {}
            for p in r.points:
                if all(p[i] == v for i, v in keys):
                    out.append({**base, **dict(zip(r.names, p))})
        return out

    def allows(self, assigned: dict) -> bool:
        return bool(self.candidates(assigned))

    def count(self) -> int:
        return sum(len(r.points) for r in self.regions)

    def describe(self) -> list[str]:
        lines = []
        for r in self.regions:
            if r.unchecked:
                lines.append(f"{r.model}: feasible region not solved ({r.unchecked}); every point is tried")
                continue
            share = f"{len(r.points):,} of {r.total:,} configurations"
            bounds = _bounds(r)
            lines.append(f"{r.model}: {share} can meet the budget" + (f": {bounds}" if bounds else ""))
        return lines

    def empty_message(self) -> str:
        why = []
        for r in self.regions:
            part = f"{r.model} ({r.total:,} configurations)"
            if r.smallest and r.smallest[0] > self.budget * (1 + self.tolerance):
                part += (
                    f": its smallest count is {r.smallest[0]:,.0f} (at the narrowest width, {MIN_DIM}: "
                    f"{_point(r.smallest[1])})"
                )
            if r.nearest:
                err, point, dim = r.nearest
                part += (
                    f"; the nearest any gets is {err:+.2%} ({_point(point)}, dim {dim}), "
                    f"so --tolerance {math.ceil(abs(err) * 1e4) / 1e4:g} would admit it"
                )
            why.append(part)
        return (
            f"no configuration of the search space can meet the budget of {self.budget:,} parameters "
            f"within {self.tolerance:.1%}: " + "; ".join(why)
        )


def _point(p: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]} {v}" for k, v in p.items())


def _bounds(r: Region) -> str:
    parts = []
    for i, name in enumerate(r.names):
        vals = sorted({p[i] for p in r.points}, key=lambda v: (isinstance(v, str), v))
        if not vals:
            continue
        if name in r.ranges:
            parts.append(
                f"{name} {vals[0]}..{vals[-1]}" + ("" if vals[-1] - vals[0] + 1 == len(vals) else " (some)")
            )
        else:
            parts.append(f"{name} in {{{', '.join(map(str, vals))}}}")
    return ", ".join(parts)


# ---- the grid of one model --------------------------------------------------------------------------
def _grid_dims(space: Space, ms: ModelSpace) -> list[tuple[str, str, list]]:
    """(dimension, Optuna name, values) of each dimension that can change the count."""
    dims = []
    for name, d in ms.dims.items():
        if name == "lr" or d.kind == "float":
            continue
        values = list(d.values) if d.kind == "categorical" else list(range(int(d.low), int(d.high) + 1))
        dims.append((name, space.param_name(ms, name), values))
    return dims


def solve_region(space: Space, ms: ModelSpace, budget: int, tolerance: float, align: int) -> Region:
    dims = _grid_dims(space, ms)
    total = math.prod(len(v) for _, _, v in dims)
    ranges = frozenset(space.param_name(ms, n) for n, d in ms.dims.items() if d.kind == "int")
    region = Region(ms.model, tuple(n for _, n, _ in dims), [], total, ranges=ranges)
    if total > MAX_POINTS:
        region.unchecked = f"{total:,} configurations are too many to enumerate"
        return region
    fixed = {n: v for n, v in space.fixed.items() if n in KNOBS or n in ms.names}
    optuna_name = {d[0]: d[1] for d in dims}
    choice_dims = [d for d in dims if d[0] in ms.options]
    number_dims = [d for d in dims if d[0] not in ms.options]
    for combo in itertools.product(*(v for _, _, v in choice_dims)):
        choices = dict(zip((d[0] for d in choice_dims), combo))
        _solve_combo(region, ms, fixed, choices, number_dims, budget, tolerance, align, optuna_name)
    if region.unchecked:
        region.points = []
    return region


def _solve_combo(region, ms, fixed, choices, number_dims, budget, tolerance, align, optuna_name) -> None:
    names = [d[0] for d in number_dims]
    grid = list(itertools.product(*(v for _, _, v in number_dims)))
    order = [n for _, n, _ in number_dims]

    def as_point(values: tuple) -> tuple:
        named = {**dict(zip(order, values)), **{optuna_name[c]: v for c, v in choices.items()}}
        return tuple(named[n] for n in region.names)

    count = _poly_counter(ms, fixed, choices, names, grid, align) if ms.is_spec else None
    if count is not None:
        err, dim, smallest = _fit(count, len(grid), budget, align)
    elif len(grid) <= MAX_SOLVED:
        err, dim, smallest = _fit_by_solver(ms, fixed, choices, names, grid, budget, align)
    else:
        region.unchecked = f"its count is not a polynomial of {', '.join(names)} and the grid is large"
        return
    ok = np.abs(err) <= tolerance
    region.points += [as_point(grid[i]) for i in np.flatnonzero(ok)]
    if (~ok).any():
        i = int(np.argmin(np.where(ok, np.inf, np.abs(err))))
        if region.nearest is None or abs(err[i]) < abs(region.nearest[0]):
            region.nearest = (float(err[i]), _as_dict(region, as_point(grid[i])), int(dim[i]))
    j = int(np.argmin(smallest))
    if region.smallest is None or smallest[j] < region.smallest[0]:
        region.smallest = (float(smallest[j]), _as_dict(region, as_point(grid[j])))


def _as_dict(region: Region, point: tuple) -> dict:
    return dict(zip(region.names, point))


def _config(ms: ModelSpace, sets: dict):
    from archdsl.lm.config import ModelConfig

    sets = dict(sets)
    depth = int(sets.pop("depth", DEFAULT_DEPTH))
    sets.pop("lr", None)
    return ModelConfig(model=ms.model, sets=sets, depth=depth)


def _fit_by_solver(ms, fixed, choices, names, grid, budget, align):
    """The budget solver at each point: (relative error, width, count at the smallest width)."""
    err, dim, smallest = [], [], []
    for values in grid:
        cfg = dataclasses.replace(_config(ms, {**fixed, **choices, **dict(zip(names, values))}), align=align)
        try:
            got = solve(cfg, budget, tolerance=math.inf)
            if got.dim < MIN_DIM:
                got = dataclasses.replace(got, dim=-(-MIN_DIM // align) * align)
            params = sizes(got).params
            err.append((params - budget) / budget)
            dim.append(got.dim)
            smallest.append(sizes(cfg, dim=-(-MIN_DIM // align) * align).params)
        except ArchdslError:
            err.append(math.inf)
            dim.append(0)
            smallest.append(math.inf)
    return np.array(err), np.array(dim), np.array(smallest, dtype=float)


def _poly_counter(ms, fixed, choices, names, grid, align):
    """``count(dim_array) -> counts`` for every grid point at once, or None where not exact."""
    spec = load_spec(ms.model)
    decl = declarations(spec)
    given = {*fixed, *choices, *names}
    if any(h in decl.hypers and h not in given for h in ("heads", "n")):
        return None  # a balanced heads or n is solved from the width
    base = {**fixed, **choices}
    base.pop("lr", None)
    depth_fixed = int(base.pop("depth", DEFAULT_DEPTH))
    try:
        hypers, _ = configure(decl, None, base)
        probe = dict(zip(names, grid[0]))
        formula = instantiate(
            spec, None, {**base, **{k: v for k, v in probe.items() if k != "depth"}}
        ).formula
    except ArchdslError:
        return None
    symbols = {s for m, _ in formula.terms for s in m}
    if not symbols <= {*hypers, "dim"}:
        return None
    cols = {n: np.array([g[i] for g in grid], dtype=float) for i, n in enumerate(names)}
    depth = cols.pop("depth", np.full(len(grid), float(depth_fixed)))
    norm = 2.0 if ms.model in SPEC_BASELINES else 1.0

    def count(D: np.ndarray) -> np.ndarray:
        mixer = np.zeros(len(grid))
        for mono, c in formula.terms:
            term = np.full(len(grid), float(c))
            for s in mono:
                term = term * (D if s == "dim" else cols[s] if s in cols else float(hypers[s]))
            mixer += term
        return VOCAB * D + norm * D + depth * (norm * D + mixer)

    rng = random.Random(0)
    for i in rng.sample(range(len(grid)), min(CHECKS, len(grid))):
        sets = {**base, "depth": int(depth[i]), **{n: grid[i][k] for k, n in enumerate(names)}}
        for D in (align, 7 * align):
            try:
                exact = sizes(_config(ms, sets), dim=D).params
            except ArchdslError:
                return None
            if exact != count(np.full(len(grid), float(D)))[i]:
                return None
    return count


def _fit(count, n: int, budget: int, align: int):
    """The width (at least MIN_DIM) nearest the budget at every point (counts grow with the width):
    bisection on k, width k·align, all points at once."""
    kmax, kmin = max(1, MAX_DIM // align), -(-MIN_DIM // align)
    lo, hi = np.full(n, kmin - 1, dtype=np.int64), np.full(n, kmax, dtype=np.int64)
    while (lo < hi).any():  # the largest k >= kmin whose count is at most the budget (kmin - 1: none)
        mid = (lo + hi + 1) // 2
        ok = count(mid * float(align)) <= budget
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid - 1)
    below = np.maximum(lo, kmin)
    above = np.minimum(lo + 1, kmax)
    cb, ca = count(below * float(align)), count(above * float(align))
    use_above = np.abs(ca - budget) < np.abs(cb - budget)
    got = np.where(use_above, ca, cb)
    dim = np.where(use_above, above, below) * align
    return (got - budget) / budget, dim, count(np.full(n, float(kmin * align)))


def feasible(space: Space, budget: int, tolerance: float, align: int = 1) -> Feasible:
    """The feasible region of every model of ``space``."""
    out = Feasible(budget, tolerance, several=len(space.models) > 1)
    for ms in space.models:
        if ms.model in BASELINES or ms.is_spec:
            out.regions.append(solve_region(space, ms, budget, tolerance, align))
    return out


# ---- the sampler -------------------------------------------------------------------------------------
TRIES = 16  # proposals of the base sampler tried before the nearest feasible point is taken


class FeasibleSampler(optuna.samplers.BaseSampler):
    """Wraps an Optuna sampler so that every trial's configuration is in the feasible region.

    A joint (relative) proposal of the base sampler is kept when feasible, drawn again up to
    ``TRIES`` times, then replaced by the feasible point nearest to it; a parameter sampled on its own
    (independent: the first trials, or one the base sampler does not model jointly) is drawn uniformly
    from the feasible points that agree with what the trial already holds. Distributions stay those of
    the space, so the study, its importances and optuna-dashboard see the space as declared."""

    def __init__(self, base, region: Feasible, seed: int = 0):
        self.base, self.region, self.rng = base, region, random.Random(seed)
        self.names = region.constrained()
        self.relative: dict[int, dict] = {}  # trial number -> the relative params given to it

    def infer_relative_search_space(self, study, trial):
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        proposal = {}
        for _ in range(TRIES):
            proposal = self.base.sample_relative(study, trial, search_space)
            if self.region.allows(self._constrained(proposal)):
                break
        else:
            proposal = {**proposal, **self._nearest(proposal, search_space)}
        self.relative[trial.number] = proposal
        return proposal

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name not in self.names:
            return self.base.sample_independent(study, trial, param_name, param_distribution)
        held = self._constrained({**self.relative.get(trial.number, {}), **trial.params})
        options = self.region.candidates(held)
        if not options:  # what the trial holds is infeasible already (an enqueued configuration)
            return self.base.sample_independent(study, trial, param_name, param_distribution)
        return self.rng.choice(options)[param_name]

    def _constrained(self, params: dict) -> dict:
        return {k: v for k, v in params.items() if k in self.names}

    def _nearest(self, proposal: dict, search_space) -> dict:
        """The feasible point closest to a proposal (numbers by their share of the range, log
        ranges by their logarithm; a different category counts 1)."""
        wanted = self._constrained(proposal)
        best, best_d = [], math.inf
        for point in self.region.candidates({}):
            d = sum(_distance(v, point.get(k), search_space.get(k)) for k, v in wanted.items())
            if d < best_d - 1e-12:
                best, best_d = [point], d
            elif abs(d - best_d) <= 1e-12:
                best.append(point)
        return {k: v for k, v in self.rng.choice(best).items() if k in search_space} if best else {}

    def before_trial(self, study, trial):
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.relative.pop(trial.number, None)
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self):
        self.base.reseed_rng()


def _distance(a, b, dist) -> float:
    if b is None:
        return 1.0
    if isinstance(a, str) or isinstance(b, str) or not hasattr(dist, "low"):
        return float(a != b)
    lo, hi = float(dist.low), float(dist.high)
    if getattr(dist, "log", False):
        a, b, lo, hi = (math.log(max(x, 1e-300)) for x in (a, b, lo, hi))
    return abs(a - b) / (hi - lo or 1.0)
