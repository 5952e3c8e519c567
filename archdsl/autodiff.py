"""Autodiff on the IR: a vector-Jacobian rule per op (``VJP[op]``), composed into one backward step.

``extract_cell`` cuts the recurrence out of a layer: parameter-only values become leaves (``PARAM``
nodes named ``c0, c1, …``, computed once per forward outside the kernel). ``derive_backward`` builds
the backward of one step: given the cotangents of the new states (``STATE`` leaves named ``d:S``)
and of the readout (an ``INPUT`` leaf named ``d:y``), it recomputes the step's forward values from
the previous state and returns the cotangents of the previous states, of every per-token input and
of every constant. Backward-through-time is this step run in reverse time; the kernels and the
tests both use it. The backward is linear in the cotangents, so partial cotangents (a kernel tile's
share) can be summed afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from archdsl.ir import Graph, Kind, LayerIR, Node, Op, positive

GRAD = "d:"


@dataclass
class Cell:
    """One step of the recurrence, with its own graph and named leaves."""

    graph: Graph
    axes: tuple[str, ...]
    sizes: dict[str, int]
    inputs: dict[str, tuple[str, ...]]  # per-token tensors the step reads
    consts: dict[str, tuple[str, ...]]  # parameter-only values (c0, c1, …)
    const_source: dict[str, int]  # const name -> node in the layer graph
    states: dict[str, tuple[str, ...]]
    next_state: dict[str, int]
    output: int
    output_axes: tuple[str, ...]
    #: the spec's name of a node, where it gives one (``let`` values, parameters): generated kernels
    #: read as the spec (``b_kh``); a node without one keeps a numbered name
    names: dict[int, str] = field(default_factory=dict)
    #: the constants positive by their construction in the layer graph (``ir.positive``: a fixed decay
    #: ``exp(…)``), whose logarithm the chunked form may take
    positive: frozenset[str] = frozenset()


@dataclass
class Backward:
    """One backward step; leaves as in the cell plus ``d:<state>`` and ``d:y``."""

    graph: Graph
    d_state: dict[str, int]  # cotangent of each previous state
    d_inputs: dict[str, int]
    d_consts: dict[str, int]
    next_state: dict[str, int]  # the forward update, recomputed
    extra: dict[str, int] = field(default_factory=dict)
    cotangent: dict[int, int] = field(default_factory=dict)  # forward node -> its cotangent's node


class _Emitter:
    """Adds nodes to a graph with the axes of each op computed from its arguments."""

    def __init__(self, graph: Graph, axes: tuple[str, ...]):
        self.g, self.order = graph, axes

    def canon(self, axes) -> tuple[str, ...]:
        s = set(axes)
        return tuple(a for a in self.order if a in s)

    def add(self, op: Op, args=(), attr=None, axes=None) -> int:
        if axes is None:
            axes = set().union(*(self.g[a].axes for a in args)) if args else ()
        return self.g.add(Node(op, tuple(args), self.canon(axes), attr))

    def const(self, v: float) -> int:
        return self.add(Op.CONST, attr=float(v))

    def unary(self, op, a):
        return self.add(op, (a,))

    def sum_to(self, x: int, axes) -> int:
        """Reduce a cotangent onto ``axes`` (undo broadcasting)."""
        for ax in [a for a in self.g[x].axes if a not in axes]:
            x = self.add(Op.SUM, (x,), ax, set(self.g[x].axes) - {ax})
        return x

    def expand_to(self, x: int, axes) -> int:
        missing = tuple(a for a in self.canon(axes) if a not in self.g[x].axes)
        return self.add(Op.EXPAND, (x,), missing, set(self.g[x].axes) | set(missing)) if missing else x


def extract_cell(layer: LayerIR) -> Cell:
    g, kinds = layer.graph, layer.graph.kinds()
    frontier = layer.frontier()
    cg = Graph()
    remap: dict[int, int] = {}
    consts, const_source = {}, {}
    for k, i in enumerate(frontier):
        name = f"c{k}"
        consts[name], const_source[name] = g[i].axes, i
        remap[i] = cg.add(Node(Op.PARAM, (), g[i].axes, name))
    for i in sorted(layer.cell_nodes()):
        if i in remap or (kinds[i] == Kind.CONST and g[i].op is not Op.CONST):
            continue
        n = g[i]
        remap[i] = cg.add(Node(n.op, tuple(remap[a] for a in n.args), n.axes, n.attr))
    out = remap[layer.output_node]
    names: dict[int, str] = {}
    for name, i in layer.values.items():  # the first name a node has wins (``o`` before ``y = o``)
        if i in remap:
            names.setdefault(remap[i], name)
    return Cell(
        cg,
        layer.axes,
        dict(layer.sizes),
        layer.inputs(),
        consts,
        const_source,
        dict(layer.states),
        {s: remap[n] for s, n in layer.next_state.items()},
        out,
        cg[out].axes,
        names,
        frozenset(name for name, i in const_source.items() if positive(g, i, sizes=layer.sizes)),
    )


# ---- vector-Jacobian rules: (emitter, node, its id, arg ids, cotangent id) -> per-arg cotangents ----
def _vjp_unary(f: Callable) -> Callable:
    return lambda e, n, z, args, dz: [f(e, z, args[0], dz)]


def _mul(e, a, b):
    return e.add(Op.MUL, (a, b))


def _step(e, a):
    return e.add(Op.STEP, (a,))


VJP: dict[Op, Callable] = {
    Op.INPUT: lambda e, n, z, args, dz: [],
    Op.PARAM: lambda e, n, z, args, dz: [],
    Op.STATE: lambda e, n, z, args, dz: [],
    Op.CONST: lambda e, n, z, args, dz: [],
    Op.NEG: _vjp_unary(lambda e, z, a, dz: e.add(Op.NEG, (dz,))),
    Op.EXP: _vjp_unary(lambda e, z, a, dz: _mul(e, dz, z)),
    Op.LOG: _vjp_unary(lambda e, z, a, dz: e.add(Op.DIV, (dz, a))),
    Op.TANH: _vjp_unary(lambda e, z, a, dz: _mul(e, dz, e.add(Op.SUB, (e.const(1), _mul(e, z, z))))),
    Op.SIGMOID: _vjp_unary(lambda e, z, a, dz: _mul(e, dz, _mul(e, z, e.add(Op.SUB, (e.const(1), z))))),
    Op.SOFTPLUS: _vjp_unary(lambda e, z, a, dz: _mul(e, dz, e.unary(Op.SIGMOID, a))),
    Op.RELU: _vjp_unary(lambda e, z, a, dz: _mul(e, dz, _step(e, a))),
    Op.ABS: _vjp_unary(lambda e, z, a, dz: _mul(e, dz, e.unary(Op.SIGN, a))),
    Op.SQRT: _vjp_unary(lambda e, z, a, dz: e.add(Op.DIV, (_mul(e, dz, e.const(0.5)), z))),
    Op.COS: _vjp_unary(lambda e, z, a, dz: e.add(Op.NEG, (_mul(e, dz, e.unary(Op.SIN, a)),))),
    Op.SIN: _vjp_unary(lambda e, z, a, dz: _mul(e, dz, e.unary(Op.COS, a))),
    Op.INDEX: lambda e, n, z, args, dz: [],  # no arguments: a constant of the sizes
    Op.STEP: lambda e, n, z, args, dz: [None],
    Op.SIGN: lambda e, n, z, args, dz: [None],
    Op.ADD: lambda e, n, z, args, dz: [dz, dz],
    Op.SUB: lambda e, n, z, args, dz: [dz, e.add(Op.NEG, (dz,))],
    Op.MUL: lambda e, n, z, args, dz: [_mul(e, dz, args[1]), _mul(e, dz, args[0])],
    Op.DIV: lambda e, n, z, args, dz: [
        e.add(Op.DIV, (dz, args[1])),
        e.add(Op.NEG, (e.add(Op.DIV, (_mul(e, dz, z), args[1])),)),
    ],
    Op.MAXIMUM: lambda e, n, z, args, dz: _select(e, e.add(Op.SUB, args), dz),
    Op.MINIMUM: lambda e, n, z, args, dz: _select(e, e.add(Op.SUB, args[::-1]), dz),
    Op.SUM: lambda e, n, z, args, dz: [e.expand_to(dz, e.g[args[0]].axes)],
    Op.RENAME: lambda e, n, z, args, dz: [
        e.add(Op.RENAME, (dz,), tuple((b, a) for a, b in n.attr), e.g[args[0]].axes)
    ],
    Op.EXPAND: lambda e, n, z, args, dz: [e.sum_to(dz, e.g[args[0]].axes)],
    # a shift's transpose moves the cotangent back by the same tokens (and sums a window)
    Op.SHIFT: lambda e, n, z, args, dz: [e.add(Op.UNSHIFT, (dz,), n.attr, e.g[args[0]].axes)],
    Op.UNSHIFT: lambda e, n, z, args, dz: [e.add(Op.SHIFT, (dz,), n.attr, e.g[args[0]].axes)],
    Op.POSITION: lambda e, n, z, args, dz: [],  # no arguments: a count of the tokens
    Op.ROUND: lambda e, n, z, args, dz: [e.add(Op.ROUND, (dz,))],  # rounded as a 16-bit tensor's is
}


def _select(e, diff, dz):
    """max(a, b): the cotangent goes to a where a > b, to b where a < b, half to each at a tie
    (torch's convention, so the kernels' gradients equal the reference's): s = (1 + sign(a - b)) / 2."""
    s = _mul(e, e.const(0.5), e.add(Op.ADD, (e.const(1), e.add(Op.SIGN, (diff,)))))
    return [_mul(e, dz, s), _mul(e, dz, e.add(Op.SUB, (e.const(1), s)))]


def _backprop(graph: Graph, axes, seeds) -> tuple[Graph, _Emitter, dict[int, int]]:
    """Reverse-mode through ``graph``: a copy of it (same node ids) plus the cotangent nodes.

    ``seeds``: (node, leaf) pairs: the leaf (a ``d:…`` input or state) is the cotangent of the node.
    Returns the graph, its emitter and the cotangent node of every node that receives one."""
    g = Graph()
    em = _Emitter(g, axes)
    for n in graph.nodes:
        g.add(n)
    ct: dict[int, int] = {}

    def accumulate(i: int, c: int | None) -> None:
        if c is None:
            return
        c = em.sum_to(c, g[i].axes)
        c = em.expand_to(c, g[i].axes)
        ct[i] = em.add(Op.ADD, (ct[i], c)) if i in ct else c

    for i, leaf in seeds:
        accumulate(i, g.add(leaf))
    for i in range(len(graph) - 1, -1, -1):
        if i not in ct:
            continue
        n = g[i]
        for a, c in zip(n.args, VJP[n.op](em, n, i, n.args, ct[i])):
            accumulate(a, c)
    return g, em, ct


def _grads_of(graph: Graph, em: _Emitter, ct: dict[int, int], op: Op, leaves: dict) -> dict[str, int]:
    """The cotangent of each named leaf (a zero block where nothing reaches it)."""
    out = {}
    for name, axes in leaves.items():
        leaf = next((i for i, n in enumerate(graph.nodes) if n.op is op and n.attr == name), None)
        out[name] = ct[leaf] if leaf is not None and leaf in ct else em.expand_to(em.const(0.0), axes)
    return out


def derive_backward(cell: Cell) -> Backward:
    seeds = [(cell.next_state[s], Node(Op.STATE, (), axes, GRAD + s)) for s, axes in cell.states.items()]
    seeds.append((cell.output, Node(Op.INPUT, (), cell.output_axes, GRAD + "y")))
    g, em, ct = _backprop(cell.graph, cell.axes, seeds)
    return Backward(
        graph=g,
        d_state=_grads_of(cell.graph, em, ct, Op.STATE, cell.states),
        d_inputs=_grads_of(cell.graph, em, ct, Op.INPUT, cell.inputs),
        d_consts=_grads_of(cell.graph, em, ct, Op.PARAM, cell.consts),
        next_state=dict(cell.next_state),
        cotangent=ct,
    )


@dataclass
class TokenBackward:
    """The backward of a stateless per-token computation with several outputs (leaves ``d:<out>``)."""

    graph: Graph
    d_inputs: dict[str, int]
    d_consts: dict[str, int]
    cotangent: dict[int, int] = field(default_factory=dict)  # forward node -> its cotangent's node


def derive_token_backward(graph: Graph, axes, outputs: dict[str, int], inputs: dict, consts: dict):
    seeds = [(i, Node(Op.INPUT, (), graph[i].axes, GRAD + name)) for name, i in outputs.items()]
    g, em, ct = _backprop(graph, axes, seeds)
    return TokenBackward(
        graph=g,
        d_inputs=_grads_of(graph, em, ct, Op.INPUT, inputs),
        d_consts=_grads_of(graph, em, ct, Op.PARAM, consts),
        cotangent=ct,
    )
