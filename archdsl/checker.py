"""Checker: a parsed spec + a configuration -> a typed, verified :class:`LayerIR`.

``instantiate`` resolves hyper-parameters, presets, ``--set`` overrides and choices, evaluates sizes,
elaborates the per-step math into named-axis IR nodes (declaratively: definitions may appear in any
order; cycles are errors), and splits the step into pre-projection values, constants, the per-token
part and the recurrent part. ``check_spec`` instantiates the defaults, every preset and every
combination of choices, and validates the search space.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from archdsl import spec as S
from archdsl.errors import ArchdslError, ArchdslWarning, Span, add_note, did_you_mean, fmt, plural
from archdsl.ir import Graph, Kind, LayerIR, Node, Op, ParamSpec, Projection, verify
from archdsl.sizes import Poly, evaluate, to_poly

L2_EPS = 1e-6
MAX_AXIS = 2**31 - 1  # a tensor dimension must fit an int32 index

#: per-step functions: name -> number of arguments (and whether it takes an axis, as ``sum[i]``)
FUNCTIONS: dict[str, tuple[int, bool]] = {
    "exp": (1, False),
    "log": (1, False),
    "tanh": (1, False),
    "sigmoid": (1, False),
    "softplus": (1, False),
    "relu": (1, False),
    "abs": (1, False),
    "sqrt": (1, False),
    "silu": (1, False),
    "sg": (1, False),
    "identity": (1, False),
    "square": (1, False),
    "max": (2, False),
    "min": (2, False),
    "spectral_norm": (2, False),
    "sum": (1, True),
    "mean": (1, True),
    "dot": (2, True),
    "l2norm": (1, True),
    "shift": (1, False),  # shift(a): the previous token's a; shift[c](a): the last |c| tokens on axis c
    "conv": (2, True),  # conv[c](a, w) = sum[c](w * shift[c](a)): a depthwise causal convolution
    "cos": (1, False),
    "sin": (1, False),
    "index": (0, True),  # index[i](): 0, 1, …, size(i) - 1 along axis i, a constant
}
_UNARY = {
    "exp": Op.EXP,
    "log": Op.LOG,
    "tanh": Op.TANH,
    "sigmoid": Op.SIGMOID,
    "softplus": Op.SOFTPLUS,
    "relu": Op.RELU,
    "abs": Op.ABS,
    "sqrt": Op.SQRT,
    "cos": Op.COS,
    "sin": Op.SIN,
}
_BINARY = {"+": Op.ADD, "-": Op.SUB, "*": Op.MUL, "/": Op.DIV}

#: initialisers of learned parameters: name -> number of arguments (axis-taking: linspace[k])
INIT_FUNCTIONS: dict[str, tuple[int, bool]] = {
    "zeros": (0, False),
    "ones": (0, False),
    "normal": (2, False),
    "uniform": (2, False),
    "loguniform": (2, False),
    "xavier": (0, False),
    "orthogonal": (1, False),  # or (gain, blocks): see inits.py
    "linspace": (2, True),
    "log": (1, False),
    "exp": (1, False),
    "logit": (1, False),
    "softplus_inv": (1, False),
    "sigmoid": (1, False),
    "tanh": (1, False),
    "sqrt": (1, False),
}

#: model-level names a search space may range over besides the spec's hypers and choices
MODEL_KNOBS = ("depth", "lr", "dim")
RESERVED = {"x"}


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


@dataclass
class Declarations:
    """The configuration-independent facts of a spec: hypers, choices, presets, search space."""

    spec: S.SpecFile
    hypers: dict[str, S.Hyper] = field(default_factory=dict)
    choices: dict[str, S.Choice] = field(default_factory=dict)
    presets: dict[str, S.Preset] = field(default_factory=dict)
    search: list[S.Range] = field(default_factory=list)


def _walk(body, top=True):
    for st in body:
        yield st, top
        if isinstance(st, S.If):
            yield from _walk(st.then, False)
            yield from _walk(st.otherwise, False)


def declarations(spec: S.SpecFile) -> Declarations:
    d = Declarations(spec)
    for st, top in _walk(spec.body):
        if isinstance(st, (S.Hyper, S.Choice, S.Preset, S.Search)) and not top:
            kind = type(st).__name__.lower()
            raise ArchdslError(f"a {kind} must be declared at the top level, not inside 'if'", st.span)
        if isinstance(st, (S.Hyper, S.Choice)):
            if st.name in d.hypers or st.name in d.choices:
                first = (d.hypers.get(st.name) or d.choices[st.name]).span
                raise ArchdslError(f"'{st.name}' is defined twice; first on line {first.line}", st.span)
            (d.hypers if isinstance(st, S.Hyper) else d.choices)[st.name] = st
        if isinstance(st, S.Choice):
            if len(set(st.options)) != len(st.options):
                twice = next(o for o in st.options if st.options.count(o) > 1)
                raise ArchdslError(f"choice '{st.name}' lists '{twice}' twice", st.span)
            if st.default is not None and st.default not in st.options:
                raise ArchdslError(
                    f"default '{st.default}' of choice '{st.name}' is not one of its values",
                    st.span,
                    did_you_mean(st.default, st.options, "values"),
                )
        elif isinstance(st, S.Preset):
            if st.name in d.presets:
                raise ArchdslError(
                    f"preset '{st.name}' is defined twice; first on line {d.presets[st.name].span.line}",
                    st.span,
                )
            d.presets[st.name] = st
        elif isinstance(st, S.Search):
            for r in st.ranges:
                if any(r.name == other.name for other in d.search):
                    raise ArchdslError(
                        f"'{r.name}' has two search ranges", r.span, "give each name one range"
                    )
                d.search.append(r)
    if "dim" not in d.hypers:
        raise ArchdslError(
            "a spec must declare 'hyper dim = …' (the model width)",
            file_span(spec),
            "add for example: hyper dim = 512",
        )
    return d


def file_span(spec: S.SpecFile, at_end: bool = False) -> Span:
    """Where a fact about the whole file is reported: its header or first line (or last statement)."""
    if at_end and spec.body:
        return spec.body[-1].span
    if spec.header_span is not None:
        return spec.header_span
    first = spec.source.splitlines()[0] if spec.source.strip() else ""
    return Span(Path(spec.path).name, 1, 1, 1, len(first) + 1)


def _choice_default(c: S.Choice) -> str:
    return c.default if c.default is not None else c.options[0]


class _Builder:
    """Instantiates one configuration of a spec."""

    def __init__(self, decl: Declarations, hypers: Mapping, choices: Mapping[str, str]):
        self.decl, self.spec = decl, decl.spec
        self.choices = dict(choices)
        self.hyper_values = dict(hypers)
        self.warnings: list[ArchdslWarning] = []
        self.graph = Graph()
        # compile-time names
        self.lets: dict[str, S.Let] = {}
        self.sizes_known: dict[str, float | int] = {}
        self.polys: dict[str, Poly] = {}
        self.axis_decl: dict[str, S.Axis] = {}
        # values
        self.decl_of: dict[str, object] = {}  # value name -> its declaring statement
        self.node_of: dict[str, int] = {}
        self.resolving: list[str] = []
        self.used: set[str] = set()
        self.pre: dict[str, int] = {}
        self.sequence: dict[str, int] = {}

    # ---- compile-time names ------------------------------------------------------------------
    def number(self, ref: S.Ref) -> float | int:
        name = ref.name
        if name in self.hyper_values:
            return self.hyper_values[name]
        if name in self.sizes_known:
            return self.sizes_known[name]
        if name in self.lets:
            if name in self.resolving:
                cycle = " -> ".join([*self.resolving[self.resolving.index(name) :], name])
                raise ArchdslError(
                    f"cyclic definition: {cycle}", ref.span, "a compile-time name cannot depend on itself"
                )
            self.resolving.append(name)
            self.sizes_known[name] = evaluate(self.lets[name].value, self.number)
            self.resolving.pop()
            return self.sizes_known[name]
        if name in self.axis_decl:
            return self.axis_size(name)
        if name in self.choices:
            raise ArchdslError(
                f"choice '{name}' has no numeric value; compare it in an 'if' "
                f"(if {name} == {self.choices[name]} {{ … }})",
                ref.span,
            )
        known = [*self.hyper_values, *self.lets, *self.axis_decl]
        raise ArchdslError(
            f"unknown name '{name}' in a compile-time expression",
            ref.span,
            did_you_mean(name, known, "names"),
        )

    def is_number(self, name: str) -> bool:
        return name in self.hyper_values or name in self.lets or name in self.axis_decl

    def poly(self, name: str) -> Poly:
        if name in self.hyper_values:
            return Poly.sym(name)
        if name in self.polys:
            return self.polys[name]
        src = self.lets.get(name) or self.axis_decl.get(name)
        expr = src.value if isinstance(src, S.Let) else src.size if src else None
        p = to_poly(expr, self.poly) if expr is not None else None
        self.polys[name] = p if p is not None else Poly.sym(name)
        return self.polys[name]

    def axis_size(self, name: str) -> int:
        key = ("axis", name)
        if key in self.sizes_known:
            return self.sizes_known[key]
        ax = self.axis_decl[name]
        if name in self.resolving:
            cycle = " -> ".join([*self.resolving[self.resolving.index(name) :], name])
            raise ArchdslError(f"cyclic definition: {cycle}", ax.span, "a size cannot depend on itself")
        self.resolving.append(name)
        size = evaluate(ax.size, self.number)
        self.resolving.pop()
        if not float(size).is_integer() or not 1 <= size <= MAX_AXIS:
            why = "a positive integer" if size < MAX_AXIS else f"at most {MAX_AXIS:,}"
            raise ArchdslError(
                f"axis '{name}' has size {fmt(size)}; a size must be {why}",
                ax.span,
                "values: " + ", ".join(f"{k}={fmt(v)}" for k, v in self.hyper_values.items()),
            )
        self.sizes_known[key] = int(size)
        return int(size)

    def cond(self, c: S.Cond) -> bool:
        if isinstance(c, S.BoolOp):
            vals = [self.cond(a) for a in c.args]
            return (not vals[0]) if c.op == "not" else (all(vals) if c.op == "and" else any(vals))
        sides = []
        for side in (c.left, c.right):
            if isinstance(side, S.Ref) and side.name in self.choices:
                sides.append(("choice", side.name))
            elif (
                isinstance(side, S.Ref)
                and not side.axes
                and side.name not in self.hyper_values
                and side.name not in self.lets
                and side.name not in self.axis_decl
            ):
                sides.append(("word", side.name))
            else:
                sides.append(("num", evaluate(side, self.number)))
        kinds = {k for k, _ in sides}
        if "choice" in kinds:
            if c.op not in ("==", "!="):
                raise ArchdslError(f"choices compare with == or !=, found '{c.op}'", c.span)
            (ka, a), (kb, b) = sides
            if ka == "choice" and kb == "word":
                opts = self.decl.choices[a].options
                if b not in opts:
                    raise ArchdslError(
                        f"'{b}' is not a value of choice '{a}'", c.right.span, did_you_mean(b, opts, "values")
                    )
                value, other = self.choices[a], b
            elif ka == "choice" and kb == "choice":
                value, other = self.choices[a], self.choices[b]
            else:
                choice = a if ka == "choice" else b
                raise ArchdslError(
                    f"write the choice on the left: {choice} {c.op} VALUE",
                    c.span,
                    "known values: " + ", ".join(self.decl.choices[choice].options),
                )
            return (value == other) == (c.op == "==")
        if "word" in kinds:
            word = next(v for k, v in sides if k == "word")
            raise ArchdslError(
                f"unknown name '{word}' in a condition",
                c.span,
                did_you_mean(word, [*self.choices, *self.hyper_values, *self.lets], "names"),
            )
        a, b = sides[0][1], sides[1][1]
        return {"==": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[c.op]

    # ---- statements ----------------------------------------------------------------------------
    def flatten(self, body):
        for st in body:
            if isinstance(st, S.If):
                yield from self.flatten(st.then if self.cond(st.cond) else st.otherwise)
            else:
                yield st

    def declare(self, name: str, st, span) -> None:
        if name in RESERVED:
            raise ArchdslError(f"'{name}' is reserved for the layer input", span)
        clash = (
            name in self.decl_of
            or name in self.hyper_values
            or name in self.lets
            or name in self.choices
            or name in self.axis_decl
        )
        if clash:
            first = (
                self.decl_of.get(name)
                or self.lets.get(name)
                or self.axis_decl.get(name)
                or self.decl.hypers.get(name)
                or self.decl.choices.get(name)
            )
            raise ArchdslError(
                f"'{name}' is defined twice; first on line {first.span.line}",
                span,
                "every name (hyper, let, axis, choice, value) is defined once",
            )
        self.decl_of[name] = st

    def check_axes(self, axes, span) -> tuple[str, ...]:
        for a in axes:
            if a not in self.axis_decl:
                raise ArchdslError(
                    f"unknown axis '{a}'",
                    span,
                    did_you_mean(a, self.axis_decl, "axes") or "declare it: axis NAME = SIZE",
                )
            self.axis_size(a)
        if len(set(axes)) != len(axes):
            twice = next(a for a in axes if axes.count(a) > 1)
            raise ArchdslError(
                f"axis '{twice}' listed twice in [{', '.join(axes)}]",
                span,
                "a value has each axis once; rename one of them (declare another axis)",
            )
        return tuple(axes)

    def canon(self, axes) -> tuple[str, ...]:
        return tuple(a for a in self.axis_order if a in set(axes))

    # ---- per-step math -------------------------------------------------------------------------
    def node(self, op: Op, args=(), axes=(), attr=None) -> int:
        return self.graph.add(Node(op, tuple(args), self.canon(axes), attr))

    def axes_of(self, i: int) -> tuple[str, ...]:
        return self.graph[i].axes

    def binary(self, op: Op, a: int, b: int) -> int:
        return self.node(op, (a, b), set(self.axes_of(a)) | set(self.axes_of(b)))

    def const(self, v: float) -> int:
        return self.node(Op.CONST, attr=float(v))

    def rename(self, i: int, declared, given, span) -> int:
        if len(given) != len(declared):
            raise ArchdslError(
                f"indexed with {len(given)} axes [{', '.join(given)}], but it has "
                f"{len(declared)} [{', '.join(declared)}]",
                span,
            )
        given = self.check_axes(given, span)
        mapping = tuple((d, g) for d, g in zip(declared, given) if d != g)
        for d, g in mapping:
            if self.axis_size(d) != self.axis_size(g):
                raise ArchdslError(
                    f"axis '{g}' has size {self.axis_size(g)} but '{d}' has size "
                    f"{self.axis_size(d)}; renaming needs equal sizes",
                    span,
                )
        return self.node(Op.RENAME, (i,), given, mapping) if mapping else i

    def value(self, ref: S.Ref) -> int:
        """The node of a named value at a use site (with ``'`` and ``[axes]`` applied)."""
        name = ref.name
        if name == "x":
            return self.layer_input(ref)
        if name in self.hyper_values or name in self.lets or name in self.axis_decl:
            if ref.primed or ref.axes:
                raise ArchdslError(
                    f"'{name}' is a compile-time number; it has no next value (') and no axes", ref.span
                )
            return self.const(self.number(ref))
        if name in self.choices:
            raise ArchdslError(
                f"choice '{name}' is not a tensor; call it as a function "
                f"({name}(…)) or compare it in an 'if'",
                ref.span,
            )
        st = self.decl_of.get(name)
        if st is None:
            hint = (
                f"'{name}' is a function; call it: {name}(…)"
                if name in FUNCTIONS
                else did_you_mean(name, [*self.decl_of, *self.hyper_values, *self.lets], "names")
            )
            raise ArchdslError(f"undefined name '{name}'", ref.span, hint)
        self.used.add(name)
        if ref.primed:
            if not isinstance(st, S.State):
                raise ArchdslError(f"only a state has a next value; '{name}' is not a state", ref.span)
            node = self.resolve(name + "'", ref.span)
            return self.rename(node, st.axes, ref.axes, ref.span) if ref.axes else node
        if isinstance(st, S.State):
            node = self.node(Op.STATE, axes=st.axes, attr=name)
            declared = st.axes
        else:
            node = self.resolve(name, ref.span)
            declared = self.axes_of(node)
        return self.rename(node, declared, ref.axes, ref.span) if ref.axes is not None else node

    def layer_input(self, ref: S.Ref) -> int:
        """``x[axes]``: the layer input itself, a per-token value on axes whose sizes multiply to dim
        (RWKV's token shift mixes x with the previous token's x before projecting)."""
        if ref.primed or ref.axes is None:
            raise ArchdslError(
                "'x' is the layer input; project it (project x -> NAME[axes]) or read it on axes "
                "whose sizes multiply to dim (x[d] with axis d = dim)",
                ref.span,
            )
        axes = self.check_axes(ref.axes, ref.span)
        size = math.prod(self.axis_size(a) for a in axes)
        dim = self.hyper_values["dim"]
        if size != dim:
            raise ArchdslError(
                f"x[{', '.join(axes)}] has {size} numbers per token, but the layer input has dim = {dim}",
                ref.span,
                "declare an axis of the model width: axis d = dim",
            )
        if axes != self.canon(axes):
            raise ArchdslError(
                f"list the axes of x in the order they are declared: x[{', '.join(self.canon(axes))}]",
                ref.span,
            )
        return self.node(Op.INPUT, axes=axes, attr="x")

    def resolve(self, key: str, span) -> int:
        if key in self.node_of:
            return self.node_of[key]
        if key in self.resolving:
            cycle = " -> ".join([*self.resolving[self.resolving.index(key) :], key])
            raise ArchdslError(
                f"cyclic definition: {cycle}",
                span,
                "a step's definitions must not depend on themselves; use a state",
            )
        st = self.decl_of.get(key) if not key.endswith("'") else self.updates.get(key[:-1])
        if st is None:
            state = self.decl_of[key[:-1]]
            raise ArchdslError(
                f"state '{key[:-1]}' is never updated", state.span, f"add its update: {key[:-1]}' = …"
            )
        self.resolving.append(key)
        if isinstance(st, S.Param):
            node = self.node(Op.PARAM, axes=st.axes, attr=st.name)
        elif isinstance(st, S.Target):
            node = self.node(Op.INPUT, axes=st.axes, attr=st.name)
        else:
            node = self.define(st)
            if not key.endswith("'"):
                node = self.across_tokens(key, node, st.value.span)
            elif any(self.graph[i].op is Op.SHIFT for i in self.graph.ancestors([node])):
                raise ArchdslError(
                    f"the update of '{key[:-1]}' reads earlier tokens (shift, conv) inside the recurrence",
                    st.value.span,
                    "define the shifted value on its own line (kc = conv[c](k, w)) and use it here",
                )
        self.resolving.pop()
        self.node_of[key] = node
        return node

    def define(self, st: S.Define) -> int:
        node = self.expr(st.value)
        tgt = st.target
        have = self.axes_of(node)
        if tgt.primed:
            state = self.decl_of[tgt.name]
            given = self.check_axes(tgt.axes, tgt.span) if tgt.axes else state.axes
            if len(given) != len(state.axes):
                raise ArchdslError(
                    f"state '{tgt.name}' has {plural(len(state.axes), 'axis')} "
                    f"[{', '.join(state.axes)}]; its update names {len(given)}",
                    tgt.span,
                )
        else:
            given = self.check_axes(tgt.axes, tgt.span) if tgt.axes is not None else have
        extra = [a for a in have if a not in given]
        if extra:
            raise ArchdslError(
                f"shape mismatch: the right side has axes [{', '.join(have)}], the left "
                f"side {tgt.name}{chr(39) if tgt.primed else ''} has [{', '.join(given)}]",
                st.value.span,
                f"reduce the extra axes, e.g. sum[{extra[0]}](…)",
            )
        missing = [a for a in given if a not in have]
        if missing:
            node = self.node(Op.EXPAND, (node,), set(have) | set(missing), tuple(missing))
        if tgt.primed and set(given) != set(state.axes):  # S'[h, k] = …: move k onto the state's axis
            node = self.rename(node, given, state.axes, tgt.span)
        return node

    def expr(self, e: S.Expr) -> int:
        match e:
            case S.Num(value=v):
                return self.const(v)
            case S.Ref():
                return self.value(e)
            case S.Neg(arg=a):
                arg = self.expr(a)
                return self.node(Op.NEG, (arg,), self.axes_of(arg))
            case S.BinOp(op=op, left=l, right=r):
                if op not in _BINARY:
                    raise ArchdslError(
                        f"'{op}' is integer arithmetic for sizes; per-step math uses + - * /", e.span
                    )
                return self.binary(_BINARY[op], self.expr(l), self.expr(r))
            case S.Call():
                return self.call(e)
        raise AssertionError(e)

    def call(self, e: S.Call) -> int:
        func = e.func
        if func in self.choices:
            func = self.choices[func]
            if func not in FUNCTIONS:
                raise ArchdslError(
                    f"choice '{e.func}' is '{func}', which is not a function",
                    e.span,
                    f"call {e.func}(…) only where it is a function: inside 'if {e.func} != {func} {{ … }}'",
                )
        if func not in FUNCTIONS:
            raise ArchdslError(
                f"unknown function '{func}'",
                e.span,
                did_you_mean(func, [*FUNCTIONS, *self.choices], "functions"),
            )
        arity, takes_axis = FUNCTIONS[func]
        if len(e.args) != arity:
            raise ArchdslError(
                f"'{func}' takes {plural(arity, 'argument')}, found {len(e.args)}",
                e.span,
                f"the axis goes in brackets: {func}[AXIS](…)" if takes_axis else None,
            )
        if func == "shift":
            return self.shift(e)
        if takes_axis and (e.axes is None or len(e.axes) != 1):
            raise ArchdslError(f"'{func}' needs the axis it works along: {func}[AXIS](…)", e.span)
        if not takes_axis and e.axes is not None:
            raise ArchdslError(f"'{func}' works elementwise and takes no axis", e.span)
        if func == "spectral_norm":
            return self.spectral_norm(e)
        if func == "index":
            axis = self.check_axes(e.axes, e.span)[0]
            return self.node(Op.INDEX, (), (axis,), axis)
        args = [self.expr(a) for a in e.args]
        a = args[0]
        if func in _UNARY:
            return self.node(_UNARY[func], (a,), self.axes_of(a))
        if func == "identity":
            return a
        if func in ("max", "min"):
            return self.binary(Op.MAXIMUM if func == "max" else Op.MINIMUM, a, args[1])
        if func == "square":
            return self.binary(Op.MUL, a, a)
        if func in ("silu", "sg"):
            silu = self.binary(Op.MUL, a, self.node(Op.SIGMOID, (a,), self.axes_of(a)))
            return silu if func == "silu" else self.binary(Op.MUL, a, silu)
        axis = self.check_axes(e.axes, e.span)[0]
        if func == "conv":
            return self.conv(e, axis, a, args[1])
        if func == "dot":
            a = self.binary(Op.MUL, a, args[1])
        if axis not in self.axes_of(a):
            raise ArchdslError(
                f"'{func}[{axis}]' of a value with axes [{', '.join(self.axes_of(a))}]: "
                f"it has no axis '{axis}'",
                e.span,
            )
        if func in ("sum", "dot", "mean"):
            s = self.node(Op.SUM, (a,), set(self.axes_of(a)) - {axis}, axis)
            return self.binary(Op.DIV, s, self.const(self.axis_size(axis))) if func == "mean" else s
        # l2norm[i](a) = a / (sqrt(sum[i](a*a)) + eps)
        sq = self.node(Op.SUM, (self.binary(Op.MUL, a, a),), set(self.axes_of(a)) - {axis}, axis)
        norm = self.node(Op.SQRT, (sq,), self.axes_of(sq))
        return self.binary(Op.DIV, a, self.binary(Op.ADD, norm, self.const(L2_EPS)))

    # ---- across tokens: shift and conv ----------------------------------------------------------
    def shift(self, e: S.Call, arg: int | None = None) -> int:
        """shift(a) or shift[c](a): ``a`` at earlier tokens. ``a`` must be per-token."""
        if e.axes is not None and len(e.axes) != 1:
            raise ArchdslError("'shift' takes at most one axis, the window: shift[AXIS](…)", e.span)
        axis = self.check_axes(e.axes, e.span)[0] if e.axes else None
        a = self.expr(e.args[0]) if arg is None else arg
        kind = self.graph.kinds()[a]
        if kind != Kind.TOKEN:
            what = "depends on the state" if kind == Kind.RECURRENT else "is the same at every token"
            raise ArchdslError(
                f"'{e.func}' reads earlier tokens of a per-token value; its argument {what}",
                e.args[0].span,
                "shift a projection output or a value computed from one" if kind == Kind.CONST else None,
            )
        if axis is not None and axis in self.axes_of(a):
            raise ArchdslError(
                f"the window axis '{axis}' of '{e.func}[{axis}]' is already an axis of its argument "
                f"[{', '.join(self.axes_of(a))}]",
                e.span,
                "declare an axis of its own for the window: axis c = 4",
            )
        return self.node(Op.SHIFT, (a,), set(self.axes_of(a)) | ({axis} - {None}), axis)

    def conv(self, e: S.Call, axis: str, a: int, w: int) -> int:
        if axis not in self.axes_of(w):
            raise ArchdslError(
                f"the weight of 'conv[{axis}]' needs the window axis '{axis}'; it has "
                f"[{', '.join(self.axes_of(w))}]",
                e.args[1].span,
                f"declare it as param w[{axis}, …]",
            )
        window = self.shift(e, a)
        product = self.binary(Op.MUL, window, w)
        return self.node(Op.SUM, (product,), set(self.axes_of(product)) - {axis}, axis)

    def across_tokens(self, name: str, node: int, span) -> int:
        """A definition that reads other tokens becomes a sequence value: computed over the whole
        sequence before the recurrence, and read by the step as a per-token input of that name."""
        g = self.graph
        if not any(g[i].op is Op.SHIFT for i in g.ancestors([node])):
            return node
        if g.kinds()[node] == Kind.RECURRENT:
            raise ArchdslError(
                f"'{name}' mixes earlier tokens (shift, conv) with the state",
                span,
                "define the shifted value on its own line (kc = conv[c](k, w)) and use it here",
            )
        self.sequence[name] = node
        return self.node(Op.INPUT, axes=self.axes_of(node), attr=name)

    def spectral_norm(self, e: S.Call) -> int:
        w = e.args[0]
        st = self.decl_of.get(w.name) if isinstance(w, S.Ref) else None
        if not isinstance(st, S.Param) or len(st.axes) != 2 or w.axes:
            kinds = {
                S.Param: "a parameter",
                S.Target: "a projection output",
                S.State: "a state",
                S.Define: "a value of the step",
            }
            found = (
                f"'{w.name}', {kinds.get(type(st), 'a compile-time number')}"
                if isinstance(w, S.Ref)
                else "an expression"
            )
            if isinstance(st, S.Param) and len(st.axes) != 2:
                found += f" with {plural(len(st.axes), 'axis')}"
            raise ArchdslError(
                f"spectral_norm takes a learned matrix (param W[a, b]) by name; found {found}",
                e.span,
                "write: spectral_norm(W, rho)",
            )
        rho = evaluate(e.args[1], self.number)
        return self.node(Op.SPECTRAL_NORM, (self.value(w),), st.axes, float(rho))

    # ---- the whole layer -----------------------------------------------------------------------
    def build(self) -> tuple[LayerIR, Poly]:
        body = list(self.flatten(self.spec.body))
        for st in body:
            if isinstance(st, S.Let):
                self.declare(st.name, st, st.span)
                self.lets[st.name] = st
            elif isinstance(st, S.Axis):
                self.declare(st.name, st, st.span)
                self.decl_of.pop(st.name)
                self.axis_decl[st.name] = st
        self.axis_order = tuple(self.axis_decl)
        for st in body:  # every size is checked, in order, whether or not the step uses it
            if isinstance(st, (S.Let, S.Axis)):
                self.number(S.Ref(st.name, False, None, st.span))
        for st in body:
            if isinstance(st, S.Require) and not self.cond(st.cond):
                raise ArchdslError(
                    st.message or "requirement not met",
                    st.span,
                    "values: " + ", ".join(f"{k}={v}" for k, v in self.hyper_values.items()),
                )
        projections, params, states, outputs = [], [], [], []
        self.updates: dict[str, S.Define] = {}
        for st in body:
            if isinstance(st, S.Project):
                for t in st.targets:
                    self.check_axes(t.axes, t.span)
                    self.declare(t.name, t, t.span)
                projections.append(st)
            elif isinstance(st, S.Param):
                self.check_axes(st.axes, st.span)
                self.declare(st.name, st, st.span)
                self.check_init(st.init, st.axes)
                params.append(st)
            elif isinstance(st, S.State):
                self.check_axes(st.axes, st.span)
                self.declare(st.name, st, st.span)
                states.append(st)
            elif isinstance(st, S.Define):
                t = st.target
                if t.primed:
                    if not isinstance(self.decl_of.get(t.name), S.State):
                        raise ArchdslError(
                            f"'{t.name}' is not a state; only a state has an update ({t.name}')",
                            t.span,
                            did_you_mean(t.name, [s.name for s in states], "states"),
                        )
                    if t.name in self.updates:
                        raise ArchdslError(f"state '{t.name}' is updated twice", st.span)
                    self.updates[t.name] = st
                elif isinstance(self.decl_of.get(t.name), S.State):
                    raise ArchdslError(f"'{t.name}' is a state: write its update as {t.name}' = …", t.span)
                else:
                    self.declare(t.name, st, t.span)
            elif isinstance(st, S.Output):
                if st.options.bias or st.options.spectral_norm is not None:
                    raise ArchdslError(
                        "the output projection takes only 'init' (no bias, no spectral_norm)",
                        st.span,
                        f"write: output {st.name} [init EXPR]",
                    )
                outputs.append(st)
        if len(outputs) != 1:
            where = outputs[1].span if len(outputs) > 1 else file_span(self.spec, at_end=True)
            raise ArchdslError(
                "a spec needs exactly one 'output NAME' (the readout projected back "
                f"to dim), found {len(outputs)}",
                where,
                "end the step with: output NAME" if not outputs else None,
            )
        if not states:
            raise ArchdslError("a recurrent layer needs at least one 'state NAME[axes]'", outputs[0].span)
        out = outputs[0]
        # the cell: new states and the readout
        next_state = {s.name: self.resolve(s.name + "'", s.span) for s in states}
        out_node = self.value(S.Ref(out.name, False, None, out.span))
        kinds = self.graph.kinds()
        if kinds[out_node] == Kind.CONST:
            raise ArchdslError(f"output '{out.name}' depends on neither the input nor the state", out.span)
        for s in states:
            deps = self.graph.ancestors([next_state[s.name]])
            if not any(self.graph[d].op is Op.STATE and self.graph[d].attr == s.name for d in deps):
                self.warnings.append(
                    ArchdslWarning(
                        f"the update of state '{s.name}' does not depend on '{s.name}'",
                        self.updates[s.name].span,
                        "the layer is then not recurrent in this state",
                    )
                )
        # projections (their sources are per-token values computed before the cell)
        ir_projs = []
        for p in projections:
            if p.source == "x":
                src_axes = ()
            else:
                src = self.value(S.Ref(p.source, False, None, p.span))
                if self.graph.kinds()[src] == Kind.RECURRENT:
                    raise ArchdslError(
                        f"projection source '{p.source}' depends on the state; projections "
                        "run on every token before the recurrence",
                        p.span,
                    )
                self.pre[p.source] = src
                src_axes = self.axes_of(src)
            rho = evaluate(p.options.spectral_norm, self.number) if p.options.spectral_norm else None
            if p.options.init is not None:
                self.check_init(p.options.init, ("out", "in"))
            outputs = tuple((t.name, self.canon(t.axes)) for t in p.targets)
            ir_projs.append(Projection(p.source, src_axes, outputs, p.options.bias, p.options.init, rho))
        if out.options.init is not None:
            self.check_init(out.options.init, ("out", "in"))
        # every learned thing must be used: a declared but unused parameter would silently not train
        for st in [*params, *(t for p in projections for t in p.targets)]:
            if st.name not in self.used:
                what = "parameter" if isinstance(st, S.Param) else "projection output"
                raise ArchdslError(
                    f"{what} '{st.name}' is never used",
                    st.span,
                    "an unused learned value would silently never train; remove it or "
                    "declare it inside an 'if'",
                )
        for name, st in self.decl_of.items():
            if isinstance(st, S.Define) and name not in self.node_of:
                self.warnings.append(ArchdslWarning(f"'{name}' is defined but never used", st.target.span))
        layer = LayerIR(
            name=self.spec.name,
            source=self.spec.source,
            hypers=dict(self.hyper_values),
            choices=dict(self.choices),
            sizes={a: self.axis_size(a) for a in self.axis_order},
            axes=self.axis_order,
            projections=ir_projs,
            # stored tensors are laid out in axis declaration order, whatever order a spec lists them in
            params=[ParamSpec(p.name, self.canon(p.axes), p.init) for p in params],
            states={s.name: self.canon(s.axes) for s in states},
            graph=self.graph,
            values={k: v for k, v in self.node_of.items() if not k.endswith("'")},
            pre=dict(self.pre),
            sequence=dict(self.sequence),
            next_state=next_state,
            output=out.name,
            output_node=out_node,
            output_init=out.options.init,
            dim=int(self.hyper_values["dim"]),
            numbers={
                **self.hyper_values,
                **{k: self.number(S.Ref(k, False, None, v.span)) for k, v in self.lets.items()},
                **{a: self.axis_size(a) for a in self.axis_order},
            },
        )
        verify(layer)
        return layer, self.formula(layer)

    def check_init(self, e: S.Expr, axes) -> None:
        match e:
            case S.Num():
                return
            case S.Ref() if e.name in INIT_FUNCTIONS and not self.is_number(e.name):
                raise ArchdslError(f"'{e.name}' is an initialiser; call it: {e.name}(…)", e.span)
            case S.Ref():
                self.number(e)
            case S.Neg(arg=a):
                self.check_init(a, axes)
            case S.BinOp(left=l, right=r):
                self.check_init(l, axes)
                self.check_init(r, axes)
            case S.Call(func=f, args=args, axes=ax):
                if f not in INIT_FUNCTIONS:
                    raise ArchdslError(
                        f"unknown initialiser '{f}'", e.span, did_you_mean(f, INIT_FUNCTIONS, "initialisers")
                    )
                arity, takes_axis = INIT_FUNCTIONS[f]
                if f == "orthogonal" and len(args) == 2:
                    arity = 2
                    blocks = evaluate(args[1], self.number)
                    if blocks != int(blocks) or blocks < 1:
                        raise ArchdslError(
                            f"orthogonal's blocks must be a positive integer, found {blocks:g}", args[1].span
                        )
                if len(args) != arity:
                    raise ArchdslError(f"'{f}' takes {plural(arity, 'argument')}, found {len(args)}", e.span)
                if takes_axis:
                    if not ax or len(ax) != 1 or ax[0] not in axes:
                        raise ArchdslError(
                            f"'{f}' needs one axis of the parameter: {f}[AXIS](…); "
                            f"the parameter has [{', '.join(axes)}]",
                            e.span,
                        )
                elif ax:
                    raise ArchdslError(f"'{f}' takes no axis", e.span)
                if f in ("xavier", "orthogonal") and len(axes) != 2:
                    raise ArchdslError(
                        f"'{f}' initialises a matrix; this parameter has "
                        f"{plural(len(axes), 'axis')} [{', '.join(axes)}]",
                        e.span,
                    )
                for a in args:
                    self.check_init(a, axes)

    def formula(self, layer: LayerIR) -> Poly:
        def numel(axes) -> Poly:
            out = Poly.const(1)
            for a in axes:
                out = out * self.poly(a)
            return out

        total = Poly.const(0)
        for p in layer.params:
            total = total + numel(p.axes)
        for p in layer.projections:
            n_out = Poly.const(0)
            for _, ax in p.outputs:
                n_out = n_out + numel(ax)
            n_in = Poly.sym("dim") if p.source == "x" else numel(p.source_axes)
            total = total + n_in * n_out + (n_out if p.bias else Poly.const(0))
        return total + numel(layer.graph[layer.output_node].axes) * Poly.sym("dim")


def _parse_value(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


DEFAULT_DEPTH = 20


def _preset_depth_value(s: S.Setting) -> int:
    def no_names(ref: S.Ref):
        raise ArchdslError(f"a preset's depth is a number; found name '{ref.name}'", ref.span)

    value = evaluate(s.value, no_names)
    if not (isinstance(value, int) and value >= 1):
        raise ArchdslError(f"a preset's depth must be a positive integer, found {value}", s.span)
    return value


def preset_depth(decl: Declarations, preset: str | None) -> int | None:
    """The LM depth a preset names (``preset P { …, depth = 32 }``), or None."""
    if preset is None or preset not in decl.presets:
        return None
    return next((_preset_depth_value(s) for s in decl.presets[preset].settings if s.name == "depth"), None)


def configure(
    decl: Declarations,
    preset: str | None = None,
    overrides: Mapping[str, object] | None = None,
) -> tuple[dict, dict]:
    """Hyper values and choices for a preset and ``--set`` overrides (values may be strings)."""
    hypers: dict = {}
    choices = {c.name: _choice_default(c) for c in decl.choices.values()}

    def lookup(ref: S.Ref):
        if ref.name in hypers:
            return hypers[ref.name]
        raise ArchdslError(
            f"unknown name '{ref.name}' in a hyper default",
            ref.span,
            did_you_mean(ref.name, hypers, "hypers"),
        )

    for h in decl.hypers.values():
        hypers[h.name] = evaluate(h.value, lookup)
    settings: list[tuple[str, object, object]] = []
    if preset is not None:
        if preset not in decl.presets:
            hint = did_you_mean(preset, decl.presets, "presets") or "this spec has no presets"
            raise ArchdslError(f"unknown preset '{preset}' in {decl.spec.name}", hint=hint)
        for s in decl.presets[preset].settings:
            if s.name == "depth":  # a model setting, read by preset_depth()
                _preset_depth_value(s)
                continue
            if isinstance(s.value, S.Ref) and s.name in decl.choices:
                settings.append((s.name, s.value.name, s.span))
            else:
                settings.append((s.name, evaluate(s.value, lookup), s.span))
    for k, v in (overrides or {}).items():
        settings.append((k, _parse_value(v) if isinstance(v, str) else v, None))
    origin = {h.name: h.span for h in decl.hypers.values()}
    explicit: dict = {}
    for name, value, span in settings:
        where = "" if span else f"--set {name}={overrides[name]}: "
        if name in decl.choices:
            opts = decl.choices[name].options
            if value not in opts:
                raise ArchdslError(
                    f"{where}'{value}' is not a value of choice '{name}'",
                    span,
                    did_you_mean(str(value), opts, "values"),
                )
            choices[name] = value
        elif name in decl.hypers:
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ArchdslError(f"{where}hyper '{name}' needs a finite number, found '{value}'", span)
            explicit[name], origin[name] = value, span
        else:
            raise ArchdslError(
                f"{where}unknown setting '{name}'; a setting names a hyper or a choice",
                span,
                did_you_mean(name, [*decl.hypers, *decl.choices], "hypers and choices"),
            )
    hypers.clear()  # a default that uses other hypers follows their configured values
    for h in decl.hypers.values():
        hypers[h.name] = explicit[h.name] if h.name in explicit else evaluate(h.value, lookup)
    dim = hypers["dim"]
    if not (isinstance(dim, (int, float)) and math.isfinite(dim) and float(dim).is_integer() and dim >= 1):
        where = "" if origin["dim"] else f"--set dim={dim}: "
        raise ArchdslError(f"{where}dim is {dim}; the model width must be a positive integer", origin["dim"])
    return hypers, choices


@dataclass
class Instance:
    layer: LayerIR
    formula: Poly
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
        builder = _Builder(decl, hypers, choices)
        layer, formula = builder.build()
    except ArchdslError as e:
        raise e.with_source(spec.source) from None
    return Instance(layer, formula, [w.with_source(spec.source) for w in builder.warnings])


def search_space(spec: S.SpecFile) -> list[SearchDim]:
    decl = declarations(spec)
    dims = []
    for r in decl.search:
        dims.append(_search_dim(decl, r))
    return dims


def _search_dim(decl: Declarations, r: S.Range) -> SearchDim:
    def num(e):
        return evaluate(
            e,
            lambda ref: (_ for _ in ()).throw(
                ArchdslError(f"search bounds are numbers; found name '{ref.name}'", ref.span)
            ),
        )

    if r.name in decl.choices:
        opts = decl.choices[r.name].options
        if r.domain is None:
            return SearchDim(r.name, "categorical", values=opts)
        if not isinstance(r.domain, S.ValueSet):
            raise ArchdslError(f"choice '{r.name}' ranges over a set of its values, not an interval", r.span)
        values = []
        for v in r.domain.values:
            if not isinstance(v, S.Ref) or v.name not in opts:
                raise ArchdslError(
                    f"'{getattr(v, 'name', fmt(getattr(v, 'value', 0)))}' is not a value of "
                    f"choice '{r.name}'",
                    v.span,
                    did_you_mean(getattr(v, "name", ""), opts, "values"),
                )
            values.append(v.name)
        return SearchDim(r.name, "categorical", values=tuple(values))
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
        space = [_search_dim(decl, r) for r in decl.search]
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
    if dim.kind == "categorical":
        points = list(dim.values)
    elif dim.kind == "int":
        points = [dim.low, dim.high]
    else:
        points = [dim.low, dim.high]
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
