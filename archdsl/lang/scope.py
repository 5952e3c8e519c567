"""Pass 3, scope: the names of one configuration and the statements of its step.

Given the configured hypers and choices, ``scope``
1. keeps the branch of every ``if`` the configuration selects (its conditions see hypers and choices);
2. declares the lets and axes, then evaluates every size in source order, used or not;
3. checks every ``require``;
4. declares the step's names — projection outputs, parameters (their initialisers checked), states,
   definitions — and pairs each state update with its state, and finds the one ``output``.
Every name (hyper, choice, let, axis, value) is defined once. The result is a :class:`Scope`, what
each compile-time name means and where each value is declared, and a :class:`Step`, the statements the
elaborator turns into the graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from archdsl.errors import ArchdslError, did_you_mean, fmt, plural
from archdsl.lang import spec as S
from archdsl.lang.declarations import Declarations, file_span
from archdsl.lang.sizes import Poly, evaluate, to_poly

MAX_AXIS = 2**31 - 1  # a tensor dimension must fit an int32 index
RESERVED = {"x"}

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


@dataclass
class Step:
    """The statements of one configuration's step, by kind, in source order."""

    projections: list[S.Project] = field(default_factory=list)
    params: list[S.Param] = field(default_factory=list)
    states: list[S.State] = field(default_factory=list)
    updates: dict[str, S.Define] = field(default_factory=dict)  # state -> its update (S' = …)
    outputs: list[S.Output] = field(default_factory=list)  # exactly one once scope() returns

    @property
    def output(self) -> S.Output:
        return self.outputs[0]


@dataclass
class Scope:
    """What every name of one configuration means."""

    decl: Declarations
    hypers: dict[str, float | int]  # hyper -> configured value
    choices: dict[str, str]  # choice -> configured value
    lets: dict[str, S.Let] = field(default_factory=dict)
    axes: dict[str, S.Axis] = field(default_factory=dict)  # in declaration order: every value's layout
    values: dict[str, object] = field(default_factory=dict)  # value -> its declaring statement
    numbers: dict[str, float | int] = field(default_factory=dict)  # let -> value, once evaluated
    sizes: dict[str, int] = field(default_factory=dict)  # axis -> size, once evaluated
    polys: dict[str, Poly] = field(default_factory=dict)  # let or axis -> formula in the hypers
    #: lets and axes being evaluated, outermost first: a name met again is a cycle (one chain for
    #: both, since a size can go through a let and back: axis n = a; let a = n)
    evaluating: list[str] = field(default_factory=list)

    # ---- compile-time names ------------------------------------------------------------------
    def number(self, ref: S.Ref) -> float | int:
        name = ref.name
        if name in self.hypers:
            return self.hypers[name]
        if name in self.numbers:
            return self.numbers[name]
        if name in self.lets:
            self.enter(name, ref.span, "a compile-time name cannot depend on itself")
            self.numbers[name] = evaluate(self.lets[name].value, self.number)
            self.evaluating.pop()
            return self.numbers[name]
        if name in self.axes:
            return self.axis_size(name)
        if name in self.choices:
            raise ArchdslError(
                f"choice '{name}' has no numeric value; compare it in an 'if' "
                f"(if {name} == {self.choices[name]} {{ … }})",
                ref.span,
            )
        known = [*self.hypers, *self.lets, *self.axes]
        raise ArchdslError(
            f"unknown name '{name}' in a compile-time expression",
            ref.span,
            did_you_mean(name, known, "names"),
        )

    def enter(self, name: str, span, hint: str) -> None:
        """Start evaluating ``name``; meeting it again before it is done is a cycle."""
        if name in self.evaluating:
            cycle = " -> ".join([*self.evaluating[self.evaluating.index(name) :], name])
            raise ArchdslError(f"cyclic definition: {cycle}", span, hint)
        self.evaluating.append(name)

    def is_number(self, name: str) -> bool:
        return name in self.hypers or name in self.lets or name in self.axes

    def poly(self, name: str) -> Poly:
        """A hyper, let or axis as a formula in the hypers (a symbol of its own where it is not one)."""
        if name in self.hypers:
            return Poly.sym(name)
        if name in self.polys:
            return self.polys[name]
        src = self.lets.get(name) or self.axes.get(name)
        expr = src.value if isinstance(src, S.Let) else src.size if src else None
        p = to_poly(expr, self.poly) if expr is not None else None
        self.polys[name] = p if p is not None else Poly.sym(name)
        return self.polys[name]

    def axis_size(self, name: str) -> int:
        if name in self.sizes:
            return self.sizes[name]
        ax = self.axes[name]
        self.enter(name, ax.span, "a size cannot depend on itself")
        size = evaluate(ax.size, self.number)
        self.evaluating.pop()
        if not float(size).is_integer() or not 1 <= size <= MAX_AXIS:
            why = "a positive integer" if size < MAX_AXIS else f"at most {MAX_AXIS:,}"
            raise ArchdslError(
                f"axis '{name}' has size {fmt(size)}; a size must be {why}",
                ax.span,
                "values: " + ", ".join(f"{k}={fmt(v)}" for k, v in self.hypers.items()),
            )
        self.sizes[name] = int(size)
        return int(size)

    def cond(self, c: S.Cond) -> bool:
        if isinstance(c, S.BoolOp):
            vals = [self.cond(a) for a in c.args]
            return (not vals[0]) if c.op == "not" else (all(vals) if c.op == "and" else any(vals))
        sides = [self.side(s) for s in (c.left, c.right)]
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
                did_you_mean(word, [*self.choices, *self.hypers, *self.lets], "names"),
            )
        a, b = sides[0][1], sides[1][1]
        return {"==": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[c.op]

    def side(self, e: S.Expr) -> tuple[str, object]:
        """One side of a comparison: ("choice", name), ("word", a bare name) or ("num", value)."""
        if isinstance(e, S.Ref) and e.name in self.choices:
            return ("choice", e.name)
        if isinstance(e, S.Ref) and not e.axes and not self.is_number(e.name):
            return ("word", e.name)
        return ("num", evaluate(e, self.number))

    # ---- declarations ------------------------------------------------------------------------
    def flatten(self, body):
        """The statements the configuration selects: each ``if`` replaced by its taken branch."""
        for st in body:
            if isinstance(st, S.If):
                yield from self.flatten(st.then if self.cond(st.cond) else st.otherwise)
            else:
                yield st

    def declare(self, name: str, st, span, into: dict) -> None:
        """Enter ``name`` into ``into`` (lets, axes or values) if no name of any kind has it yet."""
        if name in RESERVED:
            raise ArchdslError(f"'{name}' is reserved for the layer input", span)
        clash = (
            name in self.values
            or name in self.hypers
            or name in self.lets
            or name in self.choices
            or name in self.axes
        )
        if clash:
            first = (
                self.values.get(name)
                or self.lets.get(name)
                or self.axes.get(name)
                or self.decl.hypers.get(name)
                or self.decl.choices.get(name)
            )
            raise ArchdslError(
                f"'{name}' is defined twice; first on line {first.span.line}",
                span,
                "every name (hyper, let, axis, choice, value) is defined once",
            )
        into[name] = st

    def check_axes(self, axes, span) -> tuple[str, ...]:
        for a in axes:
            if a not in self.axes:
                raise ArchdslError(
                    f"unknown axis '{a}'",
                    span,
                    did_you_mean(a, self.axes, "axes") or "declare it: axis NAME = SIZE",
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
        """``axes`` in declaration order: the layout of every value."""
        return tuple(a for a in self.axes if a in set(axes))

    def check_init(self, e: S.Expr, axes, owner: str = "the parameter") -> None:
        """An initialiser of a learned value with ``axes``: known functions over compile-time numbers.
        ``owner`` names that value in the messages."""
        match e:
            case S.Num():
                return
            case S.Ref() if e.name in INIT_FUNCTIONS and not self.is_number(e.name):
                raise ArchdslError(f"'{e.name}' is an initialiser; call it: {e.name}(…)", e.span)
            case S.Ref():
                self.number(e)
            case S.Neg(arg=a):
                self.check_init(a, axes, owner)
            case S.BinOp(left=l, right=r):
                self.check_init(l, axes, owner)
                self.check_init(r, axes, owner)
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
                            f"'{f}' needs one axis of {owner}: {f}[AXIS](…); {owner} has [{', '.join(axes)}]",
                            e.span,
                        )
                elif ax:
                    raise ArchdslError(f"'{f}' takes no axis", e.span)
                if f in ("xavier", "orthogonal") and len(axes) != 2:
                    raise ArchdslError(
                        f"'{f}' initialises a matrix; {owner} has "
                        f"{plural(len(axes), 'axis')} [{', '.join(axes)}]",
                        e.span,
                    )
                for a in args:
                    self.check_init(a, axes, owner)


def scope(decl: Declarations, hypers: Mapping, choices: Mapping[str, str]) -> tuple[Scope, Step]:
    names = Scope(decl, dict(hypers), dict(choices))
    body = list(names.flatten(decl.spec.body))
    for st in body:
        if isinstance(st, S.Let):
            names.declare(st.name, st, st.span, names.lets)
        elif isinstance(st, S.Axis):
            names.declare(st.name, st, st.span, names.axes)
    for st in body:  # every size is checked, in order, whether or not the step uses it
        if isinstance(st, (S.Let, S.Axis)):
            names.number(S.Ref(st.name, False, None, st.span))
    for st in body:
        if isinstance(st, S.Require) and not names.cond(st.cond):
            raise ArchdslError(
                st.message or "requirement not met",
                st.span,
                "values: " + ", ".join(f"{k}={v}" for k, v in names.hypers.items()),
            )
    step = Step()
    for st in body:
        _declare_step(names, step, st)
    if len(step.outputs) != 1:
        where = step.outputs[1].span if len(step.outputs) > 1 else file_span(decl.spec, at_end=True)
        raise ArchdslError(
            "a spec needs exactly one 'output NAME' (the readout projected back "
            f"to dim), found {len(step.outputs)}",
            where,
            "end the step with: output NAME" if not step.outputs else None,
        )
    if not step.states:
        raise ArchdslError("a recurrent layer needs at least one 'state NAME[axes]'", step.output.span)
    return names, step


def _declare_step(names: Scope, step: Step, st) -> None:
    """One statement of the step: its names declared, and the statement filed under its kind."""
    if isinstance(st, S.Project):
        for t in st.targets:
            names.check_axes(t.axes, t.span)
            names.declare(t.name, t, t.span, names.values)
        step.projections.append(st)
    elif isinstance(st, S.Param):
        names.check_axes(st.axes, st.span)
        names.declare(st.name, st, st.span, names.values)
        names.check_init(st.init, st.axes)
        step.params.append(st)
    elif isinstance(st, S.State):
        names.check_axes(st.axes, st.span)
        names.declare(st.name, st, st.span, names.values)
        step.states.append(st)
    elif isinstance(st, S.Define):
        t = st.target
        if t.primed:
            if not isinstance(names.values.get(t.name), S.State):
                raise ArchdslError(
                    f"'{t.name}' is not a state; only a state has an update ({t.name}')",
                    t.span,
                    did_you_mean(t.name, [s.name for s in step.states], "states"),
                )
            if t.name in step.updates:
                raise ArchdslError(f"state '{t.name}' is updated twice", st.span)
            step.updates[t.name] = st
        elif isinstance(names.values.get(t.name), S.State):
            raise ArchdslError(f"'{t.name}' is a state: write its update as {t.name}' = …", t.span)
        else:
            names.declare(t.name, st, t.span, names.values)
    elif isinstance(st, S.Output):
        if st.options.bias or st.options.spectral_norm is not None:
            raise ArchdslError(
                "the output projection takes only 'init' (no bias, no spectral_norm)",
                st.span,
                f"write: output {st.name} [init EXPR]",
            )
        step.outputs.append(st)
