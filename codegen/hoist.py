"""Hoisting the per-token part of a step out of the sequential loop.

Much of a step does not depend on the state: E88's ``l2norm[i](silu(k))``, its decay
``exp(-exp(A_log) * softplus(a + dt_bias))``. Inside the time loop every program would recompute it
at every step, and the backward would differentiate it there too (for E88, four of the forward's
six reductions and most of the backward's). The compiler cuts the cell at the *token frontier* —
the per-token values that a state-dependent value reads — and emits two parallel kernels for the part
below it: one program per (batch element, block of tokens), no recurrence, so they run at memory
speed. The sequential kernels then read the frontier values as inputs (``t0, t1, …``, fp32).

A frontier value is hoisted only if it is no larger than the per-token inputs it is computed from
(an outer product of two inputs would cost more memory traffic than it saves); otherwise the cut
moves below it. Cells whose per-token part is a couple of pointwise ops keep it in the loop.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from archdsl.codegen.plan import splittable_axes

from archdsl.autodiff import Cell, TokenBackward, derive_token_backward
from archdsl.ir import UNARY, Graph, Kind, Node, Op

LEAVES = (Op.INPUT, Op.PARAM, Op.STATE, Op.CONST)
#: hoist when the per-token part has a reduction or at least this many ops
MIN_OPS = 4


@dataclass(frozen=True)
class TokenPart:
    """The per-token values the loop reads, as a stateless computation over the cell's graph."""

    graph: Graph
    axes: tuple[str, ...]
    sizes: dict
    inputs: dict[str, tuple[str, ...]]  # per-token tensors it reads
    consts: dict[str, tuple[str, ...]]  # parameter-only values it reads
    const_source: dict[str, int]
    outputs: dict[str, int]  # hoisted name -> node
    backward: TokenBackward
    names: dict = field(default_factory=dict)  # node -> its spec name (``Cell.names``)

    def output_axes(self, name: str) -> tuple[str, ...]:
        return self.graph[self.outputs[name]].axes

    @classmethod
    def of(cls, cell: Cell, graph: Graph, inputs: dict, consts: dict, outputs: dict[str, int], names=None):
        """The part of ``graph`` (sizes and constants from ``cell``) with its derived backward;
        ``names``: its nodes' spec names."""
        return cls(
            graph=graph,
            axes=cell.axes,
            sizes=cell.sizes,
            inputs=inputs,
            consts=consts,
            const_source={c: cell.const_source[c] for c in consts},
            outputs=outputs,
            backward=derive_token_backward(graph, cell.axes, outputs, inputs, consts),
            names=names or {},
        )

    @classmethod
    def below(cls, cell: Cell, graph: Graph, outputs: dict[str, int], names=None):
        """The part computing ``outputs`` (nodes of ``graph``) from the cell's per-token inputs and
        constants that they read."""
        leaves = {
            (graph[i].op, graph[i].attr) for i in graph.ancestors(outputs.values()) if graph[i].op in LEAVES
        }
        inputs = {n: ax for n, ax in cell.inputs.items() if (Op.INPUT, n) in leaves}
        consts = {c: ax for c, ax in cell.consts.items() if (Op.PARAM, c) in leaves}
        return cls.of(cell, graph, inputs, consts, outputs, names)


def token_frontier(cell: Cell) -> list[int]:
    """The per-token values (not leaves) that state-dependent values or the readout read."""
    g, kinds = cell.graph, cell.graph.kinds()
    needed = g.ancestors([*cell.next_state.values(), cell.output])
    numel = {i: math.prod(cell.sizes[a] for a in g[i].axes) for i in needed}
    largest_input = {}
    for i in sorted(needed):
        n = g[i]
        own = numel[i] if n.op is Op.INPUT else 0
        largest_input[i] = max([own, *(largest_input[a] for a in n.args)])
    frontier: list[int] = []

    def take(i: int) -> None:
        if g[i].op in LEAVES or kinds[i] != Kind.TOKEN or i in frontier:
            return
        if numel[i] <= largest_input[i]:
            frontier.append(i)
        else:  # cheaper to compute in the loop than to store: cut below it
            for a in g[i].args:
                take(a)

    for i in sorted(needed):
        if kinds[i] == Kind.RECURRENT:
            for a in g[i].args:
                take(a)
    if kinds[cell.output] == Kind.TOKEN:
        take(cell.output)
    return sorted(frontier)


def worth_hoisting(cell: Cell, frontier: list[int]) -> bool:
    g = cell.graph
    ops = [i for i in g.ancestors(frontier) if g[i].op not in LEAVES]
    return any(g[i].op is Op.SUM for i in ops) or len(ops) >= MIN_OPS


def split_readout(cell: Cell) -> tuple[TokenPart | None, Cell]:
    """(the readout after the loop, the cell whose readout is the value the loop hands it).

    A readout that mixes an axis the state update never mixes (Gated DeltaNet's RMSNorm over the value
    axis, Mamba2's over the heads and channels) would stop the plan from splitting that axis across
    programs. The loop then stops at the last value ``o`` through which the readout depends on the
    state and that mixes no such axis, and a parallel kernel computes ``y`` from ``o`` (and per-token
    inputs and constants) after it. (None, cell) when the readout does not restrict the split."""
    g, kinds = cell.graph, cell.graph.kinds()
    best, best_split = None, set(splittable_axes(cell))
    for n in sorted(g.ancestors([cell.output]), reverse=True):
        if kinds[n] != Kind.RECURRENT or any(set(ax) <= set(g[n].axes) for ax in cell.states.values()):
            continue  # state-independent, or as large as a state: not worth a round trip through memory
        if _reaches_state(g, cell.output, n):
            continue  # the readout also reads the state some other way
        split = set(splittable_axes(dataclasses.replace(cell, output=n, output_axes=g[n].axes)))
        if len(split) > len(best_split):
            best, best_split = n, split
    if best is None:
        return None, cell
    name = _spec_name(cell, best, {*cell.inputs, *cell.consts}) or _fresh("o", {*cell.inputs, *cell.consts})
    epi = replace_with_inputs(cell, {best: name}, stateless=True)
    part = TokenPart.of(cell, epi.graph, epi.inputs, epi.consts, {"y": epi.output}, epi.names)
    loop = dataclasses.replace(cell, output=best, output_axes=g[best].axes)
    return part, replace_with_inputs(loop, {})


def _reaches_state(g: Graph, root: int, cut: int) -> bool:
    """Does ``root`` depend on a state other than through ``cut``?"""
    return any(g[i].op is Op.STATE for i in g.ancestors([root], stop={cut}))


def _spec_name(cell: Cell, i: int, taken) -> str | None:
    """The spec's name for node ``i`` as a hoisted value's name: its ``let`` name, or for a pointwise
    function of a named value ``silu_v``; None when it has none or that name is taken."""
    g, names = cell.graph, cell.names
    name = names.get(i)
    n = g[i]
    if name is None and n.op in UNARY and (n.args[0] in names or g[n.args[0]].op is Op.INPUT):
        arg = g[n.args[0]]
        name = f"{n.op.value}_{names.get(n.args[0]) or arg.attr}"
    used = set(names.values()) - {names.get(i)}
    return name if name and name not in taken and name not in used else None


def _fresh(stem: str, taken) -> str:
    k = 0
    while f"{stem}{k}" in taken:
        k += 1
    return f"{stem}{k}"


def hoist(cell: Cell, force: bool | None = None) -> tuple[TokenPart | None, Cell]:
    """(the per-token part, the cell that reads it as inputs); (None, cell) when not worth it.

    ``force``: True hoists any non-empty frontier, False never hoists, None decides by the rule."""
    frontier = token_frontier(cell)
    if not frontier or force is False or (force is None and not worth_hoisting(cell, frontier)):
        return None, cell
    g = cell.graph
    taken = {*cell.inputs, *cell.consts}
    names = []
    for i in frontier:  # named as in the spec where it names them (kh, alpha), else t0, t1, …
        names.append(_spec_name(cell, i, taken) or _fresh("t", taken))
        taken.add(names[-1])
    outputs = dict(zip(names, frontier))
    part = TokenPart.below(cell, g, outputs, {**cell.names, **{i: n for n, i in outputs.items()}})
    return part, replace_with_inputs(cell, {i: n for n, i in outputs.items()})


def replace_with_inputs(cell: Cell, replaced: dict[int, str], stateless: bool = False) -> Cell:
    """The cell with each node in ``replaced`` turned into a per-token input of that name; its inputs
    and constants are the ones its new states and readout read (``stateless``: its readout alone)."""
    g = Graph()
    remap: dict[int, int] = {}
    for i, n in enumerate(cell.graph.nodes):
        if i in replaced:
            remap[i] = g.add(Node(Op.INPUT, (), n.axes, replaced[i]))
        else:
            remap[i] = g.add(Node(n.op, tuple(remap[a] for a in n.args), n.axes, n.attr))
    names = {remap[i]: n for i, n in cell.names.items() if i not in replaced}
    names.update({remap[i]: n for i, n in replaced.items()})
    roots = [] if stateless else [remap[v] for v in cell.next_state.values()]
    used = g.ancestors([*roots, remap[cell.output]])
    leaves = {(g[i].op, g[i].attr): g[i].axes for i in used if g[i].op in (Op.INPUT, Op.PARAM)}
    return Cell(
        graph=g,
        axes=cell.axes,
        sizes=cell.sizes,
        inputs={name: ax for (op, name), ax in leaves.items() if op is Op.INPUT},
        consts={name: ax for name, ax in cell.consts.items() if (Op.PARAM, name) in leaves},
        const_source={name: src for name, src in cell.const_source.items() if (Op.PARAM, name) in leaves},
        states=cell.states,
        next_state={s: remap[v] for s, v in cell.next_state.items()},
        output=remap[cell.output],
        output_axes=cell.output_axes,
        names=names,
        positive=cell.positive & {name for (op, name) in leaves if op is Op.PARAM},
    )
