"""Linear rewrites that bring a dense cell into the persistent form (``codegen/analysis.py``).

The persistent strategy runs contractions ``sum[j](W * h[j])``: a learned matrix times a state renamed
onto the contracted axis. Two forms that are not that equal it by linearity, and are rewritten:

- **an operand with a state-free addend**, ``sum[j](W * (u[j] + h[j]))`` (E42): the contraction splits
  into ``sum[j](W * u[j]) + sum[j](W * h[j])`` (through ``+``, ``-``, negation and renaming). The first
  term reads no state: it is computed for every token before the recurrence, one GEMM over all tokens,
  and the cell reads it as an input. A contraction the spec writes with a state-free operand is
  hoisted the same way.
- **a chain through parameters**, ``sum[r](U * sum[j](V * h[j]))`` (E66's low-rank pair): both
  factors read only parameters, so it is ``sum[j](M * h[j])`` with ``M = sum[r](U * V)``, one matrix
  computed once per forward outside the recurrence (autograd through that product gives dU and dV).
  Folding, not a chain of contractions in the persistent kernel: the inner result is needed whole by
  every program, so a chain needs a second grid barrier per step or every program recomputing all of
  it (reading all of V). The fold keeps one contraction and one barrier per step and the kernels as
  they are, at the price of a d x d matrix where U and V hold 2 r d numbers: at r = d / 4 the step
  reads twice the matrix and does twice the FLOPs.

A value the rewrite moves out of the recurrence becomes a leaf of the rewritten cell: a per-token input
``token:<k>`` or a constant ``const:<k>`` (no spec name has a colon; a constant's ``const_source`` is
its own name). ``Rewrite.hoisted`` says which node of ``Rewrite.graph`` (the original cell's leaves
and the rewritten contractions) each is; ``codegen/run/rewritten.py`` computes them in torch. The
reference keeps evaluating the spec as written: the compiled layer differs by reassociation only.
Text and IR only: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from archdsl.autodiff import Cell
from archdsl.ir import Graph, Kind, Node, Op


@dataclass(frozen=True)
class Rewrite:
    cell: Cell  # the rewritten cell, whose new leaves ``token:<k>`` and ``const:<k>`` are hoisted
    graph: Graph  # the original cell's leaves and the rewritten values over them
    hoisted: dict[str, int]  # new leaf -> its node in ``graph``
    sources: dict[str, object]  # the original cell's constants -> their frontier keys
    notes: tuple[str, ...]  # what each hoisted value is, one line each (``archdsl compile``)


def rewrite(cell: Cell) -> Rewrite | None:
    """The cell with its contractions folded and split and their state-free parts hoisted; None when
    nothing moves out of the recurrence."""
    b = _Builder(cell)
    remap: dict[int, int] = {}
    for i, n in enumerate(cell.graph.nodes):
        args = tuple(remap[a] for a in n.args)
        pair = None
        if n.op is Op.SUM and b.g[args[0]].op is Op.MUL:
            pair = next((mv for mv in _factors(b.g[args[0]].args) if b.matrix(mv[0], n.attr)), None)
        remap[i] = b.contract(*pair, n.attr) if pair else b.add(n.op, args, n.attr, n.axes)
        if i in cell.names:
            b.names.setdefault(remap[i], cell.names[i])
    roots = [remap[v] for v in (*cell.next_state.values(), cell.output)]
    hoisted = _hoisted(b, roots)
    if not hoisted:
        return None
    leaves = {}
    for i in hoisted:
        kind = "const" if b.kind[i] == Kind.CONST else "token"
        leaves[i] = f"{kind}:{sum(n.startswith(kind) for n in leaves.values())}"
    g, new = _cut(b.g, roots, leaves)
    ins = {n.attr: n.axes for n in g.nodes if n.op is Op.INPUT}
    params = {n.attr: n.axes for n in g.nodes if n.op is Op.PARAM}
    sources = {c: cell.const_source[c] for c in cell.consts}
    out = Cell(
        graph=g,
        axes=cell.axes,
        sizes=cell.sizes,
        inputs=ins,
        consts=params,
        const_source={c: sources.get(c, c) for c in params},
        states=cell.states,
        next_state={s: new[remap[v]] for s, v in cell.next_state.items()},
        output=new[remap[cell.output]],
        output_axes=cell.output_axes,
        names={new[i]: name for i, name in b.names.items() if i in new and i not in leaves},
    )
    notes = tuple(f"{leaves[i]} = {b.describe(i)}" for i in hoisted)
    return Rewrite(out, b.g, {name: i for i, name in leaves.items()}, sources, notes)


def _hoisted(b: _Builder, roots: list[int]) -> list[int]:
    """The state-free values the rewritten step reads that leave it: parameter-only values (a fold, a
    split-off constant term) and per-token contractions of a parameter-only matrix."""
    out, seen, stack = set(), set(), list(roots)
    while stack:
        i = stack.pop()
        n = b.g[i]
        if i in seen or n.op in LEAVES:
            continue
        seen.add(i)
        if b.kind[i] == Kind.CONST or b.hoistable(i):
            out.add(i)
        else:
            stack.extend(n.args)
    return sorted(out)


def _cut(g: Graph, roots: list[int], leaves: dict[int, str]) -> tuple[Graph, dict[int, int]]:
    """The part of ``g`` that ``roots`` need, each node of ``leaves`` a leaf of that name (a constant
    when its name says so, else a per-token input); -> (the graph, old node -> new node)."""
    out, new = Graph(), {}
    for i in sorted(g.ancestors(roots, stop=set(leaves))):
        n = g[i]
        if i in leaves:
            op = Op.PARAM if leaves[i].startswith("const") else Op.INPUT
            new[i] = out.add(Node(op, (), n.axes, leaves[i]))
        else:
            new[i] = out.add(Node(n.op, tuple(new[a] for a in n.args), n.axes, n.attr))
    return out, new


class _Builder:
    """The rewritten graph, with the axes of each added node in the cell's order."""

    def __init__(self, cell: Cell):
        self.cell, self.g = cell, Graph()
        self.kind: list[Kind] = []
        self.names: dict[int, str] = {}  # the spec's names of nodes, as ``Cell.names``

    def add(self, op: Op, args=(), attr=None, axes=None) -> int:
        if axes is None:
            axes = set().union(*(self.g[a].axes for a in args)) - ({attr} if op is Op.SUM else set())
        n = self.g.add(Node(op, tuple(args), tuple(a for a in self.cell.axes if a in axes), attr))
        if n == len(self.kind):  # a new node, not one shared with an earlier one
            self.kind.append(max([Kind.CONST, *(self.kind[a] for a in args)]) if args else _leaf_kind(op))
        return n

    def matrix(self, i: int, axis: str) -> bool:
        """Is node ``i`` a parameter-only matrix with ``axis``?"""
        n = self.g[i]
        return self.kind[i] == Kind.CONST and n.op is not Op.CONST and len(n.axes) == 2 and axis in n.axes

    def state_free(self, i: int) -> bool:
        return self.kind[i] != Kind.RECURRENT

    def hoistable(self, i: int) -> bool:
        """Is node ``i`` a contraction of a parameter-only matrix with a state-free operand?"""
        n = self.g[i]
        if n.op is not Op.SUM or self.g[n.args[0]].op is not Op.MUL:
            return False
        return any(self.matrix(m, n.attr) and self.state_free(v) for m, v in _factors(self.g[n.args[0]].args))

    def describe(self, i: int) -> str:
        """A hoisted contraction as the spec would write it (a computed operand as ``(...)``)."""
        n = self.g[i]
        a, v = self.g[n.args[0]].args
        word = "once per forward" if self.kind[i] == Kind.CONST else "one GEMM over all tokens"
        return f"sum[{n.attr}]({self._label(a)} * {self._label(v)}), {word}"

    def _label(self, i: int) -> str:
        n = self.g[i]
        if i in self.names or n.op in (Op.PARAM, Op.INPUT, Op.STATE):
            return self.names.get(i, n.attr)
        if n.op is Op.RENAME and "(" not in (inner := self._label(n.args[0])):
            return f"{inner}[{', '.join(n.axes)}]"
        return "(...)"

    def contract(self, m: int, v: int, axis: str) -> int:
        """``sum[axis](m * v)`` for a matrix ``m``, folded through a chain and split by addend."""
        n = self.g[v]
        if n.op is Op.SUM and self.g[n.args[0]].op is Op.MUL:
            for m2, v2 in _factors(self.g[n.args[0]].args):
                if self.matrix(m2, n.attr) and _chains(self.g, m, m2, v2, axis, n.attr):
                    return self.contract(self.add(Op.SUM, (self.add(Op.MUL, (m, m2)),), axis), v2, n.attr)
        terms = _terms(self, v, 1)
        free = [(s, t) for s, t in terms if self.state_free(t)]
        rest = [(s, t) for s, t in terms if not self.state_free(t)]
        if not free or not rest:
            return self.add(Op.SUM, (self.add(Op.MUL, (m, v)),), axis)
        hoisted = self.add(Op.SUM, (self.add(Op.MUL, (m, self.combine(free))),), axis)
        if len(rest) == 1:  # the state's own term, which the persistent form needs alone
            s, t = rest[0]
            return self.add(Op.ADD if s > 0 else Op.SUB, (hoisted, self.contract(m, t, axis)))
        part = self.add(Op.SUM, (self.add(Op.MUL, (m, self.combine(rest))),), axis)
        return self.add(Op.ADD, (hoisted, part))

    def combine(self, terms: list[tuple[int, int]]) -> int:
        """The sum of signed terms as one node (a positive term first where there is one)."""
        terms = sorted(terms, key=lambda st: st[0] < 0)
        s, out = terms[0]
        if s < 0:
            out = self.add(Op.NEG, (out,))
        for s, t in terms[1:]:
            out = self.add(Op.ADD if s > 0 else Op.SUB, (out, t))
        return out


LEAVES = (Op.INPUT, Op.PARAM, Op.STATE, Op.CONST)


def _leaf_kind(op: Op) -> Kind:
    return {Op.STATE: Kind.RECURRENT, Op.INPUT: Kind.TOKEN}.get(op, Kind.CONST)


def _factors(args) -> tuple[tuple[int, int], ...]:
    a, b = args
    return ((a, b), (b, a))


def _chains(g: Graph, m: int, m2: int, v2: int, outer: str, inner: str) -> bool:
    """Does ``sum[outer](m * sum[inner](m2 * v2))`` equal ``sum[inner](sum[outer](m * m2) * v2)``?
    It does when ``m2`` is a matrix over (outer, inner), ``m``'s other axis is not ``inner``, and
    neither that axis nor ``outer`` is one of ``v2``'s (a plain product of matrices applied to ``v2``)."""
    (row,) = set(g[m].axes) - {outer}
    return set(g[m2].axes) == {outer, inner} and row != inner and not {row, outer} & set(g[v2].axes)


def _terms(b: _Builder, v: int, sign: int) -> list[tuple[int, int]]:
    """``v`` as signed addends: through ``+``, ``-``, negation and renaming (a linear map)."""
    n = b.g[v]
    if n.op is Op.ADD:
        return _terms(b, n.args[0], sign) + _terms(b, n.args[1], sign)
    if n.op is Op.SUB:
        return _terms(b, n.args[0], sign) + _terms(b, n.args[1], -sign)
    if n.op is Op.NEG:
        return _terms(b, n.args[0], -sign)
    if n.op is Op.RENAME:
        out = []
        for s, t in _terms(b, n.args[0], sign):
            mapping = tuple((o, m) for o, m in n.attr if o in b.g[t].axes)
            moved = {dict(mapping).get(a, a) for a in b.g[t].axes}
            out.append((s, b.add(Op.RENAME, (t,), mapping, moved) if mapping else t))
        return out
    return [(sign, v)]
