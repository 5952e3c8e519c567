"""Checker: a parsed spec + a configuration -> a typed, verified :class:`LayerIR`.

``instantiate`` runs five passes, each a module of its own:

1. ``declarations`` — the facts that hold in every configuration: hypers, choices, presets, search;
2. ``configure`` (``config``) — the hypers' and choices' values for a preset and ``--set`` overrides;
3. ``scope`` — the ``if`` branches taken, lets and axes evaluated, requirements checked, every name of
   the step declared once;
4. ``elaborate`` — the per-step math as named-axis IR nodes, declaratively (definitions in any order;
   a cycle is an error), the sugar lowered to primitive ops from a table;
5. ``verify`` — unused learned values, warnings, the :class:`LayerIR` assembled and verified.

The parameter formula ``archdsl check`` prints is ``LayerIR.param_formula`` over symbolic sizes.
``check_spec`` instantiates the defaults, every preset and every combination of choices, and
validates the search space (``space``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from archdsl.errors import ArchdslError, ArchdslWarning, add_note, fmt
from archdsl.ir import LayerIR
from archdsl.lang import spec as S
from archdsl.lang.config import DEFAULT_DEPTH, configure, preset_depth
from archdsl.lang.declarations import Declarations, declarations
from archdsl.lang.elaborate import elaborate
from archdsl.lang.scope import scope
from archdsl.lang.sizes import Poly
from archdsl.lang.space import MODEL_KNOBS, SearchDim, search_dim, search_space
from archdsl.lang.verify import verify

__all__ = [
    "DEFAULT_DEPTH",
    "MODEL_KNOBS",
    "CheckResult",
    "Declarations",
    "Instance",
    "SearchDim",
    "check_spec",
    "configure",
    "declarations",
    "instantiate",
    "preset_depth",
    "search_space",
]


@dataclass
class Instance:
    layer: LayerIR
    formula: Poly  # the parameter count in the hypers
    warnings: list[ArchdslWarning]


def instantiate(
    spec: S.SpecFile,
    preset: str | None = None,
    overrides: Mapping | None = None,
) -> Instance:
    """Check one configuration of a spec and return its IR (raises ArchdslError with a location)."""
    try:
        decl = declarations(spec)
        hypers, choices = configure(decl, preset, overrides)
        names, step = scope(decl, hypers, choices)
        cell = elaborate(names, step)
        layer, warnings = verify(names, step, cell)
        formula = layer.param_formula(names.poly, Poly.sym("dim"))
    except ArchdslError as e:
        raise e.with_source(spec.source) from None
    return Instance(layer, formula, [w.with_source(spec.source) for w in warnings])


@dataclass
class CheckResult:
    default: Instance
    presets: dict[str, Instance]
    search: list[SearchDim]
    variants_checked: int
    warnings: list[ArchdslWarning]


MAX_COMBINATIONS = 512


def check_spec(spec: S.SpecFile) -> CheckResult:
    """Check the defaults, every preset, every choice combination and the search space."""
    try:
        decl = declarations(spec)
        default = instantiate(spec)
        presets = {
            name: _checking(f"preset '{name}' (line {p.span.line})", spec, preset=name)
            for name, p in decl.presets.items()
        }
        names = list(decl.choices)
        combos = (
            list(
                itertools.islice(
                    itertools.product(*(decl.choices[n].options for n in names)), MAX_COMBINATIONS
                )
            )
            if names
            else []
        )
        for combo in combos:
            overrides = dict(zip(names, combo))
            _checking(", ".join(f"{k} = {v}" for k, v in overrides.items()), spec, overrides=overrides)
        space = [search_dim(decl, r) for r in decl.search]
        for dim, r in zip(space, decl.search):
            _check_range(spec, decl, dim, r)
    except ArchdslError as e:
        raise e.with_source(spec.source) from None
    return CheckResult(default, presets, space, 1 + len(presets) + len(combos), default.warnings)


def _checking(what: str, spec: S.SpecFile, **config) -> Instance:
    """``instantiate`` one configuration; an error says which one (``while checking preset 'big'``)."""
    try:
        return instantiate(spec, **config)
    except ArchdslError as e:
        raise add_note(e, f"while checking {what}") from None


def _check_range(spec, decl, dim: SearchDim, r: S.Range) -> None:
    if dim.name not in decl.hypers:
        return
    points = list(dim.values) if dim.kind == "categorical" else [dim.low, dim.high]
    if isinstance(decl.hypers[dim.name].value, S.Num) and decl.hypers[dim.name].value.is_int:
        bad = [p for p in points if not float(p).is_integer()]
        if bad:
            raise ArchdslError(f"'{dim.name}' is an integer hyper; the range has {bad[0]}", r.span)
    for p in points:
        try:
            instantiate(spec, overrides={dim.name: p})
        except ArchdslError as e:
            raise ArchdslError(
                f"search range of '{dim.name}' includes {fmt(p)}, which the spec does not allow: {e.message}",
                r.span,
                e.hint,
            ) from None
