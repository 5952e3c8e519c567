"""Compile-time arithmetic: size expressions evaluated to numbers and to polynomial formulas.

``archdsl check`` prints a layer's parameter count both as a number and as a formula in the
hyper-parameters; :class:`Poly` is that formula (sums of products of symbols). A size that is not
polynomial in the hyper-parameters (``int(dim * 1.5)``, ``max(d // 4, 16)``) stays a symbol of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from archdsl.errors import ArchdslError, did_you_mean, fmt, plural
from archdsl.lang import spec as S

SIZE_FUNCTIONS: dict[str, tuple[int, Callable]] = {
    "int": (1, lambda a: int(a)),
    "round": (1, lambda a: int(round(a))),
    "ceil": (1, lambda a: int(math.ceil(a))),
    "floor": (1, lambda a: int(math.floor(a))),
    "abs": (1, abs),
    "sqrt": (1, math.sqrt),
    "log": (1, math.log),
    "log2": (1, math.log2),
    "exp": (1, math.exp),
    "max": (2, max),
    "min": (2, min),
}


def evaluate(expr: S.Expr, lookup: Callable[[S.Ref], float | int]) -> float | int:
    """Evaluate a compile-time expression; ``lookup`` resolves names (and raises for unknown ones)."""
    match expr:
        case S.Num(value=v):
            return v
        case S.Ref():
            if expr.primed or expr.axes:
                used = (
                    expr.name
                    + ("'" if expr.primed else "")
                    + (f"[{', '.join(expr.axes)}]" if expr.axes else "")
                )
                raise ArchdslError(
                    f"a compile-time number cannot use {used}: a next value (') or axes "
                    "belong to the per-step math",
                    expr.span,
                )
            return lookup(expr)
        case S.Neg(arg=a):
            return -evaluate(a, lookup)
        case S.BinOp(op=op, left=l, right=r):
            a, b = evaluate(l, lookup), evaluate(r, lookup)
            try:
                if op == "+":
                    return a + b
                if op == "-":
                    return a - b
                if op == "*":
                    return a * b
                if op == "/":
                    out = a / b
                    return int(out) if out == int(out) and isinstance(a, int) and isinstance(b, int) else out
                if op == "//":
                    return a // b
                return a % b
            except ZeroDivisionError:
                raise ArchdslError(f"division by zero: {fmt(a)} {op} {fmt(b)}", expr.span) from None
        case S.Call(func=f, args=args, axes=axes):
            if f not in SIZE_FUNCTIONS or axes:
                raise ArchdslError(
                    f"unknown function '{f}' in a compile-time expression",
                    expr.span,
                    did_you_mean(f, SIZE_FUNCTIONS, "functions"),
                )
            arity, fn = SIZE_FUNCTIONS[f]
            if len(args) != arity:
                raise ArchdslError(f"'{f}' takes {plural(arity, 'argument')}, found {len(args)}", expr.span)
            values = [evaluate(a, lookup) for a in args]
            try:
                return fn(*values)
            except (ValueError, OverflowError) as e:
                raise ArchdslError(
                    f"{f}({', '.join(map(fmt, values))}) is undefined ({e})", expr.span
                ) from None
    raise AssertionError(expr)


@dataclass(frozen=True)
class Poly:
    """A polynomial: {monomial (sorted tuple of symbols): coefficient}."""

    terms: tuple[tuple[tuple[str, ...], float], ...]

    @staticmethod
    def const(c: float) -> Poly:
        return Poly((((), c),) if c else ())

    @staticmethod
    def sym(name: str) -> Poly:
        return Poly((((name,), 1),))

    def _dict(self) -> dict:
        return dict(self.terms)

    @staticmethod
    def _make(d: Mapping) -> Poly:
        return Poly(tuple(sorted(((m, c) for m, c in d.items() if c), key=lambda t: (-len(t[0]), t[0]))))

    def __add__(self, other: Poly | float) -> Poly:
        other = Poly.const(other) if isinstance(other, (int, float)) else other
        d = self._dict()
        for m, c in other.terms:
            d[m] = d.get(m, 0) + c
        return Poly._make(d)

    def __radd__(self, other: float) -> Poly:
        return Poly.const(other) + self

    def __mul__(self, other: Poly | float) -> Poly:
        other = Poly.const(other) if isinstance(other, (int, float)) else other
        d: dict = {}
        for m1, c1 in self.terms:
            for m2, c2 in other.terms:
                m = tuple(sorted(m1 + m2))
                d[m] = d.get(m, 0) + c1 * c2
        return Poly._make(d)

    def __rmul__(self, other: float) -> Poly:
        return Poly.const(other) * self

    def scale(self, c: float) -> Poly:
        return Poly._make({m: v * c for m, v in self.terms})

    def is_const(self) -> bool:
        return all(not m for m, _ in self.terms)

    def value(self) -> float:
        return sum(c for _, c in self.terms)

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        parts = []
        for mono, c in self.terms:
            c = int(c) if float(c).is_integer() else c
            factors = [] if (c == 1 and mono) else [str(c)]
            parts.append("*".join(factors + list(mono)))
        return " + ".join(parts)


def to_poly(expr: S.Expr, symbol: Callable[[str], Poly]) -> Poly | None:
    """The expression as a polynomial, or None when it is not one (then the caller names it)."""
    match expr:
        case S.Num(value=v):
            return Poly.const(v)
        case S.Ref(name=n):
            return symbol(n)
        case S.Neg(arg=a):
            p = to_poly(a, symbol)
            return None if p is None else p.scale(-1)
        case S.BinOp(op=op, left=l, right=r):
            a, b = to_poly(l, symbol), to_poly(r, symbol)
            if a is None or b is None:
                return None
            if op == "+":
                return a + b
            if op == "-":
                return a + b.scale(-1)
            if op == "*":
                return a * b
            if op == "/" and b.is_const() and b.value() != 0:
                return a.scale(1 / b.value())
    return None
