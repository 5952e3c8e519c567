"""Pass 4, elaborate: the step's math -> the nodes of one named-axis :class:`Graph`.

Starting from the roots — every state's update, then the readout, then each projection's source — a
value is elaborated when it is first read, so definitions may appear in any order; a definition that
reads itself is a cycle. Each call becomes nodes from three tables: ``UNARY`` and ``BINARY`` (one op
each) and ``SUGAR`` (functions written in terms of the primitive ops). A definition that reads earlier
tokens (``shift``, ``conv``) becomes a *sequence value*: computed over the whole sequence before the
recurrence, and read by the step as a per-token input; so does one that reads the token's position
(``position()``). Each projection's options (``spectral_norm``,
``init``) are evaluated beside its source, and the readout's ``init`` last.
"""

from __future__ import annotations

import math

from archdsl.errors import ArchdslError, did_you_mean, plural
from archdsl.ir import Graph, Kind, Node, Op, Projection, fold
from archdsl.lang import spec as S
from archdsl.lang.functions import BINARY, FUNCTIONS, L2_EPS, SUGAR, UNARY  # noqa: F401 (importable here)
from archdsl.lang.scope import Scope, Step
from archdsl.lang.sizes import evaluate


class Elaborator:
    """Builds the graph of one configuration's step."""

    def __init__(self, names: Scope, step: Step):
        self.names, self.step = names, step
        self.graph = Graph()
        self.node_of: dict[str, int] = {}  # value (or "S'", a state's update) -> its node
        #: definitions being elaborated, outermost first: a value met again is a cycle
        self.defining: list[str] = []
        self.used: set[str] = set()  # values read somewhere (a learned one never read is an error)
        self.sequence: dict[str, int] = {}  # sequence value -> its node (computed before the recurrence)
        self.pre: dict[str, int] = {}  # per-token value that feeds a projection -> its node
        # the roots, filled in by elaborate()
        self.next_state: dict[str, int] = {}  # state -> the node of its update
        self.output_node = -1
        self.projections: list[Projection] = []

    # ---- nodes -----------------------------------------------------------------------------------
    def node(self, op: Op, args=(), axes=(), attr=None) -> int:
        """The node (an existing equal one if any); an op of literal scalars is the literal it makes."""
        g = self.graph
        literals = [g[a].attr for a in args if g[a].op is Op.CONST and not g[a].axes]
        if args and len(literals) == len(args) and not axes:
            value = fold(op, tuple(literals))
            if value is not None:
                return self.const(value)
        return self.graph.add(Node(op, tuple(args), self.names.canon(axes), attr))

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
        given = self.names.check_axes(given, span)
        mapping = tuple((d, g) for d, g in zip(declared, given) if d != g)
        for d, g in mapping:
            size = self.names.axis_size
            if size(d) != size(g):
                raise ArchdslError(
                    f"axis '{g}' has size {size(g)} but '{d}' has size {size(d)}; renaming needs equal sizes",
                    span,
                )
        return self.node(Op.RENAME, (i,), given, mapping) if mapping else i

    # ---- names -------------------------------------------------------------------------------------
    def value(self, ref: S.Ref) -> int:
        """The node of a named value at a use site (with ``'`` and ``[axes]`` applied)."""
        name = ref.name
        if name == "x":
            return self.layer_input(ref)
        if self.names.is_number(name):
            if ref.primed or ref.axes:
                raise ArchdslError(
                    f"'{name}' is a compile-time number; it has no next value (') and no axes", ref.span
                )
            return self.const(self.names.number(ref))
        if name in self.names.choices:
            raise ArchdslError(
                f"choice '{name}' is not a tensor; call it as a function "
                f"({name}(…)) or compare it in an 'if'",
                ref.span,
            )
        st = self.names.values.get(name)
        if st is None:
            hint = (
                f"'{name}' is a function; call it: {name}(…)"
                if name in FUNCTIONS
                else did_you_mean(name, [*self.names.values, *self.names.hypers, *self.names.lets], "names")
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

    def resolve(self, key: str, span) -> int:
        """The node of a value, or of a state's update (``key`` ``S'``), elaborated on first use."""
        if key in self.node_of:
            return self.node_of[key]
        if key in self.defining:
            cycle = " -> ".join([*self.defining[self.defining.index(key) :], key])
            raise ArchdslError(
                f"cyclic definition: {cycle}",
                span,
                "a step's definitions must not depend on themselves; use a state",
            )
        st = self.names.values.get(key) if not key.endswith("'") else self.step.updates.get(key[:-1])
        if st is None:
            state = self.names.values[key[:-1]]
            raise ArchdslError(
                f"state '{key[:-1]}' is never updated", state.span, f"add its update: {key[:-1]}' = …"
            )
        self.defining.append(key)
        if isinstance(st, S.Param):
            node = self.node(Op.PARAM, axes=st.axes, attr=st.name)
        elif isinstance(st, S.Target):
            node = self.node(Op.INPUT, axes=st.axes, attr=st.name)
        else:
            node = self.define(st)
            if not key.endswith("'"):
                node = self.across_tokens(key, node, st.value.span)
            elif across := self.across(node):
                raise ArchdslError(
                    f"the update of '{key[:-1]}' {across[0]} inside the recurrence", st.value.span, across[1]
                )
        self.defining.pop()
        self.node_of[key] = node
        return node

    def define(self, st: S.Define) -> int:
        """A definition's right side, broadcast onto the axes its left side names."""
        node = self.expr(st.value)
        tgt = st.target
        have = self.axes_of(node)
        if tgt.primed:
            state = self.names.values[tgt.name]
            given = self.names.check_axes(tgt.axes, tgt.span) if tgt.axes else state.axes
            if len(given) != len(state.axes):
                raise ArchdslError(
                    f"state '{tgt.name}' has {plural(len(state.axes), 'axis')} "
                    f"[{', '.join(state.axes)}]; its update names {len(given)}",
                    tgt.span,
                )
        else:
            given = self.names.check_axes(tgt.axes, tgt.span) if tgt.axes is not None else have
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

    # ---- expressions and calls ---------------------------------------------------------------------
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
                if op not in BINARY:
                    raise ArchdslError(
                        f"'{op}' is integer arithmetic for sizes; per-step math uses + - * /", e.span
                    )
                return self.binary(BINARY[op], self.expr(l), self.expr(r))
            case S.Call():
                return self.call(e)
        raise AssertionError(e)

    def function(self, e: S.Call) -> str:
        """The function a call names (a choice names its configured value), its arity checked."""
        func = e.func
        if func in self.names.choices:
            func = self.names.choices[func]
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
                did_you_mean(func, [*FUNCTIONS, *self.names.choices], "functions"),
            )
        arity, takes_axis = FUNCTIONS[func]
        if len(e.args) != arity:
            raise ArchdslError(
                f"'{func}' takes {plural(arity, 'argument')}, found {len(e.args)}",
                e.span,
                f"the axis goes in brackets: {func}[AXIS](…)" if takes_axis else None,
            )
        return func

    def layer_input(self, ref: S.Ref) -> int:
        """``x[axes]``: the layer input itself, a per-token value on axes whose sizes multiply to dim
        (RWKV's token shift mixes x with the previous token's x before projecting)."""
        if ref.primed or ref.axes is None:
            raise ArchdslError(
                "'x' is the layer input; project it (project x -> NAME[axes]) or read it on axes "
                "whose sizes multiply to dim (x[d] with axis d = dim)",
                ref.span,
            )
        axes = self.names.check_axes(ref.axes, ref.span)
        size = math.prod(self.names.axis_size(a) for a in axes)
        dim = self.names.hypers["dim"]
        if size != dim:
            raise ArchdslError(
                f"x[{', '.join(axes)}] has {size} numbers per token, but the layer input has dim = {dim}",
                ref.span,
                "declare an axis of the model width: axis d = dim",
            )
        if axes != self.names.canon(axes):
            raise ArchdslError(
                f"list the axes of x in the order they are declared: x[{', '.join(self.names.canon(axes))}]",
                ref.span,
            )
        return self.node(Op.INPUT, axes=axes, attr="x")

    def call(self, e: S.Call) -> int:
        func = self.function(e)
        if func == "shift":  # its axis is optional
            return self.shift(e)
        takes_axis = FUNCTIONS[func][1]
        if takes_axis and (e.axes is None or len(e.axes) != 1):
            raise ArchdslError(f"'{func}' needs the axis it works along: {func}[AXIS](…)", e.span)
        if not takes_axis and e.axes is not None:
            raise ArchdslError(f"'{func}' works elementwise and takes no axis", e.span)
        if func == "spectral_norm":  # takes a parameter by name
            return self.spectral_norm(e)
        if func == "index":  # a constant along its axis: no arguments
            axis = self.names.check_axes(e.axes, e.span)[0]
            return self.node(Op.INDEX, (), (axis,), axis)
        if func == "position":  # the token's place in its sequence: no arguments, no axes
            return self.node(Op.POSITION)
        args = [self.expr(a) for a in e.args]
        if func in UNARY:
            return self.node(UNARY[func], (args[0],), self.axes_of(args[0]))
        axis = self.names.check_axes(e.axes, e.span)[0] if takes_axis else None
        if func == "conv":
            self.check_window(e, axis, args[1])
        return self.lower(SUGAR[func], dict(zip("ab", args)), e, func, axis)

    def lower(self, tree, args: dict[str, int], e: S.Call, func: str, axis: str | None) -> int:
        """The nodes of a ``SUGAR`` tree, children first, left to right."""
        if isinstance(tree, str):
            return self.const(self.names.axis_size(axis)) if tree == "|i|" else args[tree]
        if isinstance(tree, float):
            return self.const(tree)
        op, *subtrees = tree
        xs = [self.lower(t, args, e, func, axis) for t in subtrees]
        if op is Op.SHIFT:
            return self.shift(e, xs[0])
        if op is Op.SUM:
            if axis not in self.axes_of(xs[0]):
                raise ArchdslError(
                    f"'{func}[{axis}]' of a value with axes [{', '.join(self.axes_of(xs[0]))}]: "
                    f"it has no axis '{axis}'",
                    e.span,
                )
            return self.node(Op.SUM, (xs[0],), set(self.axes_of(xs[0])) - {axis}, axis)
        if len(xs) == 2:
            return self.binary(op, *xs)
        return self.node(op, xs, self.axes_of(xs[0]))

    # ---- functions with rules of their own ---------------------------------------------------------
    def shift(self, e: S.Call, arg: int | None = None) -> int:
        """shift(a) or shift[c](a): ``a`` at earlier tokens. ``a`` must be per-token."""
        if e.axes is not None and len(e.axes) != 1:
            raise ArchdslError("'shift' takes at most one axis, the window: shift[AXIS](…)", e.span)
        axis = self.names.check_axes(e.axes, e.span)[0] if e.axes else None
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

    def check_window(self, e: S.Call, axis: str, w: int) -> None:
        """conv[c](a, w): the weight ``w`` spans the window axis ``c``."""
        if axis not in self.axes_of(w):
            raise ArchdslError(
                f"the weight of 'conv[{axis}]' needs the window axis '{axis}'; it has "
                f"[{', '.join(self.axes_of(w))}]",
                e.args[1].span,
                f"declare it as param w[{axis}, …]",
            )

    def across_tokens(self, name: str, node: int, span) -> int:
        """A definition that reads other tokens (or the token's position) becomes a sequence value:
        computed over the whole sequence before the recurrence, and read by the step as a per-token
        input of that name."""
        across = self.across(node)
        if across is None:
            return node
        if self.graph.kinds()[node] == Kind.RECURRENT:
            mixes = across[0].replace("reads", "mixes", 1)
            raise ArchdslError(f"'{name}' {mixes} with the state", span, across[1])
        self.sequence[name] = node
        return self.node(Op.INPUT, axes=self.axes_of(node), attr=name)

    def across(self, node: int) -> tuple[str, str] | None:
        """(what, hint) when ``node`` reads other tokens or the token's position, else None: such a
        value is computed over the whole sequence before the recurrence, never inside a step."""
        ops = {self.graph[i].op for i in self.graph.ancestors([node])}
        if Op.SHIFT in ops:
            return "reads earlier tokens (shift, conv)", (
                "define the shifted value on its own line (kc = conv[c](k, w)) and use it here"
            )
        if Op.POSITION in ops:
            return "reads the token's position", (
                "define the value of the position on its own line (kr = k * cos(position() * theta)) "
                "and use it here"
            )
        if Op.ROUND in ops:
            return "reads a rounded() value (rounded before the recurrence; the step computes in fp32)", (
                "round a per-token value on its own line (rr = rounded(x + dx * m)) and use it here"
            )
        return None

    def spectral_norm(self, e: S.Call) -> int:
        w = e.args[0]
        st = self.names.values.get(w.name) if isinstance(w, S.Ref) else None
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
        rho = evaluate(e.args[1], self.names.number)
        return self.node(Op.SPECTRAL_NORM, (self.value(w),), st.axes, float(rho))

    # ---- the roots -------------------------------------------------------------------------------
    def readout(self, out: S.Output) -> int:
        node = self.value(S.Ref(out.name, False, None, out.span))
        if self.graph.kinds()[node] == Kind.CONST:
            raise ArchdslError(f"output '{out.name}' depends on neither the input nor the state", out.span)
        return node

    def projection(self, p: S.Project) -> Projection:
        """A projection: its source (a per-token value made before the recurrence) and options."""
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
        sn = p.options.spectral_norm
        rho = evaluate(sn, self.names.number) if sn else None
        if p.options.init is not None:
            self.names.check_init(p.options.init, ("out", "in"))
        if p.options.bias_init is not None:  # evaluated per output, on that output's axes
            for t in p.targets:
                self.names.check_init(p.options.bias_init, t.axes, f"the bias of '{t.name}'")
        outputs = tuple((t.name, self.names.canon(t.axes)) for t in p.targets)
        opts = p.options
        return Projection(p.source, src_axes, outputs, opts.bias, opts.bias_init, opts.init, rho)


def elaborate(names: Scope, step: Step) -> Elaborator:
    """The graph of the step: the state updates, the readout, the projections' sources."""
    el = Elaborator(names, step)
    el.next_state = {s.name: el.resolve(s.name + "'", s.span) for s in step.states}
    el.output_node = el.readout(step.output)
    el.projections = [el.projection(p) for p in step.projections]
    if step.output.options.init is not None:
        el.names.check_init(step.output.options.init, ("out", "in"))
    return el
