"""The syntax tree of a ``.rnn`` spec: frozen dataclasses, each with the source span it came from.

The parser (``archdsl.lang.parser``) builds these; the checker (``archdsl.lang.checker``) gives them meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archdsl.errors import Span

# ---- expressions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    value: float
    is_int: bool
    span: Span


@dataclass(frozen=True)
class Ref:
    """``name``, ``name'`` (a state after this step's update) or ``name[a, b]`` (axes renamed)."""

    name: str
    primed: bool
    axes: tuple[str, ...] | None
    span: Span


@dataclass(frozen=True)
class Call:
    """``f(args)``, or ``f[axis](args)`` for the operations along one axis (``sum[i](...)``)."""

    func: str
    axes: tuple[str, ...] | None
    args: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * / // %
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class Neg:
    arg: Expr
    span: Span


Expr = Num | Ref | Call | BinOp | Neg


@dataclass(frozen=True)
class Compare:
    op: str  # == != < > <= >=
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class BoolOp:
    op: str  # and, or, not
    args: tuple[Cond, ...]
    span: Span


Cond = Compare | BoolOp

# ---- statements --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hyper:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Let:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Axis:
    name: str
    size: Expr
    span: Span


@dataclass(frozen=True)
class Choice:
    name: str
    options: tuple[str, ...]
    default: str | None
    span: Span


@dataclass(frozen=True)
class Target:
    name: str
    axes: tuple[str, ...]
    span: Span


@dataclass(frozen=True)
class ProjOptions:
    bias: bool = False
    bias_init: Expr | None = None  # bias(EXPR), per output on its axes; None: zeros
    init: Expr | None = None  # the weight's
    spectral_norm: Expr | None = None


@dataclass(frozen=True)
class Project:
    source: str
    targets: tuple[Target, ...]
    options: ProjOptions
    span: Span


@dataclass(frozen=True)
class Param:
    name: str
    axes: tuple[str, ...]
    init: Expr
    span: Span


@dataclass(frozen=True)
class State:
    name: str
    axes: tuple[str, ...]
    span: Span


@dataclass(frozen=True)
class Define:
    target: Ref
    value: Expr
    span: Span


@dataclass(frozen=True)
class Output:
    name: str
    options: ProjOptions
    span: Span


@dataclass(frozen=True)
class Setting:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Preset:
    name: str
    settings: tuple[Setting, ...]
    span: Span


@dataclass(frozen=True)
class Interval:
    low: Expr
    high: Expr
    log: bool
    span: Span


@dataclass(frozen=True)
class ValueSet:
    values: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class Range:
    name: str
    domain: Interval | ValueSet | None  # None: all values of a choice
    span: Span


@dataclass(frozen=True)
class Search:
    ranges: tuple[Range, ...]
    span: Span


@dataclass(frozen=True)
class Require:
    cond: Cond
    message: str | None
    span: Span


@dataclass(frozen=True)
class If:
    cond: Cond
    then: tuple[Stmt, ...]
    otherwise: tuple[Stmt, ...]
    span: Span


Stmt = (
    Hyper | Let | Axis | Choice | Project | Param | State | Define | Output | Preset | Search | Require | If
)


@dataclass(frozen=True)
class SpecFile:
    """A parsed ``.rnn`` file."""

    name: str
    path: str
    source: str
    body: tuple[Stmt, ...]
    header_span: Span | None = field(default=None)
