"""The search space a spec declares: ``search { heads in 8 .. 64, nonlin in {tanh, silu} }``.

Each range becomes a :class:`SearchDim`: an integer or float interval (optionally log-scaled) over a
hyper or one of the model's knobs, or a set of values (a choice's, by default all of them). Bounds are
plain numbers. ``check_spec`` (``checker``) also instantiates the spec at each range's ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from archdsl.errors import ArchdslError, did_you_mean, fmt
from archdsl.lang import spec as S
from archdsl.lang.declarations import Declarations, declarations
from archdsl.lang.sizes import evaluate

#: model-level names a search space may range over besides the spec's hypers and choices
MODEL_KNOBS = ("depth", "lr", "dim")


@dataclass
class SearchDim:
    name: str
    kind: str  # "int", "float" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    values: tuple | None = None

    def describe(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(map(str, self.values)) + "}"
        return f"{self.low} .. {self.high}" + (" log" if self.log else "")


def search_space(spec: S.SpecFile) -> list[SearchDim]:
    decl = declarations(spec)
    dims = []
    for r in decl.search:
        dims.append(search_dim(decl, r))
    return dims


def search_dim(decl: Declarations, r: S.Range) -> SearchDim:
    def num(e):
        return evaluate(
            e,
            lambda ref: (_ for _ in ()).throw(
                ArchdslError(f"search bounds are numbers; found name '{ref.name}'", ref.span)
            ),
        )

    if r.name in decl.choices:
        return _choice_dim(decl, r)
    if r.name not in decl.hypers and r.name not in MODEL_KNOBS:
        raise ArchdslError(
            f"search over unknown name '{r.name}'",
            r.span,
            did_you_mean(r.name, [*decl.hypers, *decl.choices, *MODEL_KNOBS]),
        )
    if r.domain is None:
        raise ArchdslError(
            f"'{r.name}' needs a range: {r.name} in LOW .. HIGH or {r.name} in {{a, b}}", r.span
        )
    if isinstance(r.domain, S.ValueSet):
        return SearchDim(r.name, "categorical", values=tuple(num(v) for v in r.domain.values))
    low, high = num(r.domain.low), num(r.domain.high)
    if low >= high:
        raise ArchdslError(
            f"empty range: {fmt(low)} .. {fmt(high)}; the low bound comes first", r.domain.span
        )
    if r.domain.log and low <= 0:
        raise ArchdslError(f"a log range needs a positive lower bound, found {fmt(low)}", r.domain.span)
    is_int = isinstance(low, int) and isinstance(high, int)
    return SearchDim(r.name, "int" if is_int else "float", low, high, r.domain.log)


def _choice_dim(decl: Declarations, r: S.Range) -> SearchDim:
    opts = decl.choices[r.name].options
    if r.domain is None:
        return SearchDim(r.name, "categorical", values=opts)
    if not isinstance(r.domain, S.ValueSet):
        raise ArchdslError(f"choice '{r.name}' ranges over a set of its values, not an interval", r.span)
    values = []
    for v in r.domain.values:
        if not isinstance(v, S.Ref) or v.name not in opts:
            raise ArchdslError(
                f"'{getattr(v, 'name', fmt(getattr(v, 'value', 0)))}' is not a value of choice '{r.name}'",
                v.span,
                did_you_mean(getattr(v, "name", ""), opts, "values"),
            )
        values.append(v.name)
    return SearchDim(r.name, "categorical", values=tuple(values))
