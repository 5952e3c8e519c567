"""The typed IR: one step of a recurrent layer as a graph of named-axis tensor operations.

Every value carries the names of its axes (a subset of the layer's axes, in declaration order).
Elementwise operations broadcast by name; ``SUM`` removes one axis; ``RENAME`` moves a value onto
other axes of the same size; ``EXPAND`` broadcasts onto more axes. Every pass keys a table on
:class:`Op`: ``VJP`` (``archdsl.autodiff``), ``TORCH`` (``archdsl.reference``) and ``TRITON``
(``archdsl.codegen.emit.triton``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field


class Op(enum.Enum):
    # -- leaves: where a value comes from
    INPUT = "input"  # a per-token tensor made before the cell (a projection's output)
    PARAM = "param"  # a learned parameter
    STATE = "state"  # a state's value before this step
    CONST = "const"  # a scalar literal (attr: the value)
    # -- elementwise, one argument
    NEG = "neg"  # -a
    EXP = "exp"  # e^a
    LOG = "log"  # natural log
    TANH = "tanh"
    SIGMOID = "sigmoid"  # 1 / (1 + e^-a)
    SOFTPLUS = "softplus"  # log(1 + e^a)
    RELU = "relu"  # max(a, 0)
    ABS = "abs"
    SQRT = "sqrt"
    STEP = "step"  # 1 where a > 0 else 0 (no gradient)
    SIGN = "sign"  # -1, 0 or 1 (no gradient)
    COS = "cos"
    SIN = "sin"
    # -- elementwise, two arguments (broadcast by axis name)
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    MAXIMUM = "maximum"
    MINIMUM = "minimum"
    # -- axes
    SUM = "sum"  # sum over one axis (attr: the axis)
    RENAME = "rename"  # move onto other axes of equal size (attr: ((old, new), ...))
    EXPAND = "expand"  # broadcast onto more axes (attr: the axes added)
    # -- constants with axes: computed once per forward, outside the recurrence, in torch
    INDEX = "index"  # attr an axis: 0, 1, …, size - 1 along it (no arguments, no gradient)
    # -- parameter transforms: run once per forward, outside the recurrence, in torch
    SPECTRAL_NORM = "spectral_norm"  # rho * W / sigma_max(W), power iteration (attr: rho)
    # -- across tokens: run over the whole sequence before the recurrence, in torch
    SHIFT = "shift"  # attr None: the previous token's value (0 at the first); attr an axis c of size
    #                  C: the window of the last C tokens on c, oldest first (c = C-1 is this token)
    UNSHIFT = "unshift"  # the transpose of SHIFT (its VJP): attr None: the next token's value;
    #                      attr c: sum over c of the value C-1-c tokens later
    POSITION = "position"  # the token's place in its sequence, 0, 1, … (no arguments, no gradient):
    #                        a per-token leaf the layer supplies (restarting at each packed sequence,
    #                        continuing from the state "x:position")
    ROUND = "rounded"  # a rounded to the layer's 16-bit type (the projections' output type: bf16 or
    #                    fp16; the identity in an fp32 layer), as a library computing in that type
    #                    stores it; its gradient rounded alike


LEAVES = frozenset({Op.INPUT, Op.PARAM, Op.STATE, Op.CONST})
UNARY = frozenset(
    {Op.NEG, Op.EXP, Op.LOG, Op.TANH, Op.SIGMOID, Op.SOFTPLUS, Op.RELU, Op.ABS, Op.SQRT, Op.STEP, Op.SIGN}
    | {Op.COS, Op.SIN}
)
BINARY = frozenset({Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAXIMUM, Op.MINIMUM})
TRANSFORMS = frozenset({Op.SPECTRAL_NORM})
#: constants computed from the sizes alone: always outside the cell (a frontier value or below one)
CONSTANTS = frozenset({Op.INDEX})
#: ops that read other tokens or the token's place among them, or round to the layer's 16-bit type:
#: only in ``LayerIR.sequence`` values (computed in torch before the recurrence), never inside a cell
SEQUENCE = frozenset({Op.SHIFT, Op.UNSHIFT, Op.POSITION, Op.ROUND})
#: ops that may appear inside a compiled kernel: every one needs a VJP and a Triton rule
CELL_OPS = frozenset(Op) - TRANSFORMS - SEQUENCE - CONSTANTS


class Kind(enum.IntEnum):
    """How often a value changes: the checker's per-token / recurrent split."""

    CONST = 0  # only parameters and literals: computed once per forward
    TOKEN = 1  # per token, independent of the state: parallel over time
    RECURRENT = 2  # depends on the previous state: sequential


@dataclass(frozen=True)
class Node:
    op: Op
    args: tuple[int, ...]
    axes: tuple[str, ...]
    attr: object = None


@dataclass
class Graph:
    """An append-only list of nodes in topological order, with structural sharing."""

    nodes: list[Node] = field(default_factory=list)
    _index: dict[Node, int] = field(default_factory=dict, repr=False)

    def add(self, node: Node) -> int:
        if node in self._index:
            return self._index[node]
        self.nodes.append(node)
        self._index[node] = len(self.nodes) - 1
        return len(self.nodes) - 1

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]

    def __len__(self) -> int:
        return len(self.nodes)

    def kinds(self) -> list[Kind]:
        kinds: list[Kind] = []
        for n in self.nodes:
            if n.op is Op.STATE:
                kinds.append(Kind.RECURRENT)
            elif n.op in (Op.INPUT, Op.POSITION):
                kinds.append(Kind.TOKEN)
            elif n.op in (Op.PARAM, Op.CONST):
                kinds.append(Kind.CONST)
            else:
                kinds.append(
                    max([Kind.CONST, *(kinds[a] for a in n.args)])
                )  # no max(default=): torch.compile traces it
        return kinds

    def ancestors(self, roots, stop=()) -> set[int]:
        """``roots`` and everything they are computed from, not looking below the nodes in ``stop``."""
        seen: set[int] = set()
        stack = list(roots)
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                if i not in stop:
                    stack.extend(self.nodes[i].args)
        return seen


@dataclass(frozen=True)
class Projection:
    """One GEMM: ``source`` (flattened) -> the concatenated ``outputs`` (each reshaped to its axes)."""

    source: str  # "x" (the layer input) or a per-token value
    source_axes: tuple[str, ...]
    outputs: tuple[tuple[str, tuple[str, ...]], ...]
    bias: bool
    #: the bias's init expression (spec AST), evaluated per output on its axes; None: zeros
    bias_init: object
    init: object  # the weight's init expression (spec AST) or None for xavier-uniform
    spectral_norm: float | None  # rho, when the weight is spectrally normalised


@dataclass(frozen=True)
class ParamSpec:
    name: str
    axes: tuple[str, ...]
    init: object  # an init expression (spec AST)


@dataclass
class LayerIR:
    """A spec instantiated at concrete hyper-parameters and choices: what every backend runs."""

    name: str
    source: str  # the spec text
    hypers: dict[str, float | int]
    choices: dict[str, str]
    sizes: dict[str, int]  # axis name -> size
    axes: tuple[str, ...]  # all axes, in declaration order (the layout of every value)
    projections: list[Projection]
    params: list[ParamSpec]
    states: dict[str, tuple[str, ...]]
    graph: Graph  # one step: pre-projection values, constants, the cell
    values: dict[str, int]  # every named value -> node
    pre: dict[str, int]  # per-token values that feed a projection
    next_state: dict[str, int]  # state -> node of its value after the step
    output: str  # the readout value projected back to dim
    output_node: int
    output_init: object
    dim: int
    numbers: dict[str, float | int] = field(default_factory=dict)  # every compile-time name's value
    #: per-token values that read other tokens (a ``shift`` or ``conv``): name -> node, computed over
    #: the whole sequence before the recurrence; the cell reads each as an ``INPUT`` of that name
    sequence: dict[str, int] = field(default_factory=dict)

    # ---- derived facts -----------------------------------------------------------------------
    def numel(self, axes) -> int:
        out = 1
        for a in axes:
            out *= self.sizes[a]
        return out

    def param_count(self) -> int:
        """Learned numbers: parameters, projection weights and biases, and the readout to ``dim``."""
        return self.param_formula(self.sizes.__getitem__, self.dim)

    def param_formula(self, size, dim):
        """The parameter count over ``size(axis)`` and the width ``dim``: numbers give the count,
        symbols (``archdsl.lang.sizes.Poly``) the formula in the hypers that ``archdsl check`` prints."""

        def numel(axes):
            out = 1
            for a in axes:
                out = out * size(a)
            return out

        total = 0
        for p in self.params:
            total = total + numel(p.axes)
        for p in self.projections:
            n_out = 0
            for _, ax in p.outputs:
                n_out = n_out + numel(ax)
            n_in = dim if p.source == "x" else numel(p.source_axes)
            total = total + n_in * n_out + (n_out if p.bias else 0)
        return total + numel(self.graph[self.output_node].axes) * dim

    def state_size(self) -> int:
        return sum(self.numel(ax) for ax in self.states.values())

    def cell_roots(self) -> list[int]:
        return [*self.next_state.values(), self.output_node]

    def cell_nodes(self) -> set[int]:
        """Nodes the cell needs: everything under the new states and the readout."""
        return self.graph.ancestors(self.cell_roots())

    def fingerprint(self) -> str:
        """A hash of everything that defines the computation (not of the spec's comments)."""
        payload = {
            "axes": self.axes,
            "sizes": self.sizes,
            "states": self.states,
            "nodes": [(n.op.value, n.args, n.axes, repr(n.attr)) for n in self.graph.nodes],
            "next": self.next_state,
            "out": self.output_node,
            "params": [(p.name, p.axes) for p in self.params],
            "inputs": sorted(self.inputs()),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def frontier(self) -> list[int]:
        """Parameter-only values the cell reads: computed once per forward, outside the recurrence.

        A backend receives these as tensors (and returns their gradients); literals are inlined."""
        kinds = self.graph.kinds()
        cell = self.cell_nodes()
        used = {a for i in cell if kinds[i] != Kind.CONST for a in self.graph[i].args}
        return sorted(i for i in used if kinds[i] == Kind.CONST and self.graph[i].op is not Op.CONST)

    def inputs(self) -> dict[str, tuple[str, ...]]:
        """Per-token tensors the cell reads (name -> axes); a projection output that only a
        sequence value reads is not one of them."""
        only_sequence = (
            self.graph.ancestors(self.sequence.values()) - self.cell_nodes() if self.sequence else ()
        )
        return {
            n.attr: n.axes
            for i, n in enumerate(self.graph.nodes)
            if n.op is Op.INPUT and i not in only_sequence
        }


#: each elementwise op on fp64 scalars, as the reference interpreter computes it on tensors
SCALAR: dict[Op, Callable[..., float]] = {
    Op.NEG: lambda a: -a,
    Op.EXP: math.exp,
    Op.LOG: math.log,
    Op.TANH: math.tanh,
    Op.SIGMOID: lambda a: 1.0 / (1.0 + math.exp(-a)) if a >= 0 else math.exp(a) / (1.0 + math.exp(a)),
    Op.SOFTPLUS: lambda a: a if a > 20.0 else math.log1p(math.exp(a)),
    Op.RELU: lambda a: max(a, 0.0),
    Op.ABS: abs,
    Op.SQRT: math.sqrt,
    Op.STEP: lambda a: 1.0 if a > 0 else 0.0,
    Op.SIGN: lambda a: (a > 0) - (a < 0) + 0.0,
    Op.COS: math.cos,
    Op.SIN: math.sin,
    Op.ADD: lambda a, b: a + b,
    Op.SUB: lambda a, b: a - b,
    Op.MUL: lambda a, b: a * b,
    Op.DIV: lambda a, b: a / b,
    Op.MAXIMUM: max,
    Op.MINIMUM: min,
}


def fold(op: Op, values: tuple[float, ...]) -> float | None:
    """``op`` of literal scalars: the literal the compiler writes in its place (``sqrt(n)`` of a size
    ``n`` reads no parameter and needs no gradient, in no kernel). None where ``op`` is not elementwise
    or the result is not a finite number (left to the kernels as written)."""
    fn = SCALAR.get(op)
    if fn is None:
        return None
    try:
        out = float(fn(*values))
    except (ValueError, OverflowError, ZeroDivisionError):
        return None
    return out if math.isfinite(out) else None


def positive(g: Graph, i: int, params=frozenset(), sizes: dict[str, int] | None = None) -> bool:
    """Is the value positive by its construction (so that its logarithm is defined)? ``params``: the
    names of parameters known to be positive. With ``sizes``, a constant of the sizes (numbers and
    ``index[ax]()``, RetNet's fixed decays 1 - 2^(-5-h)) is also positive when its range is."""
    if sizes is not None:
        bounds = _range(g, i, sizes)
        if bounds is not None and bounds[0] > 0:
            return True
    n = g[i]
    if n.op in (Op.EXP, Op.SIGMOID, Op.SOFTPLUS):
        return True
    if n.op is Op.CONST:
        return n.attr > 0
    if n.op is Op.PARAM:
        return n.attr in params
    if n.op in (Op.MUL, Op.DIV, Op.ADD):
        return all(positive(g, a, params) for a in n.args)
    return n.op is Op.EXPAND and positive(g, n.args[0], params)


def _range(g: Graph, i: int, sizes: dict[str, int]) -> tuple[float, float] | None:
    """Bounds (lo, hi) of every value of a constant of the sizes, by interval arithmetic; None for a
    value that is not one (a parameter, an input, a state) or an op without a rule here."""
    n = g[i]
    if n.op is Op.CONST:
        return float(n.attr), float(n.attr)
    if n.op is Op.INDEX:
        return 0.0, float(sizes[n.attr] - 1)
    args = [_range(g, a, sizes) for a in n.args]
    if not args or None in args:
        return None
    (lo, hi), *rest = args
    if n.op in (Op.EXPAND, Op.RENAME):
        return lo, hi
    if n.op is Op.NEG:
        return -hi, -lo
    if n.op is Op.EXP:
        return math.exp(lo), math.exp(hi)
    if n.op is Op.LOG:
        return (math.log(lo), math.log(hi)) if lo > 0 else None
    if n.op not in (Op.ADD, Op.SUB, Op.MUL, Op.DIV):
        return None
    lo2, hi2 = rest[0]
    if n.op is Op.ADD:
        return lo + lo2, hi + hi2
    if n.op is Op.SUB:
        return lo - hi2, hi - lo2
    if n.op is Op.DIV:
        if lo2 <= 0 <= hi2:
            return None
        lo2, hi2 = 1 / hi2, 1 / lo2
    ends = [lo * lo2, lo * hi2, hi * lo2, hi * hi2]
    return min(ends), max(ends)


def verify(layer: LayerIR) -> None:
    """Structural checks between passes: topological order, axes consistent with each op."""
    g = layer.graph
    for i, n in enumerate(g.nodes):
        assert all(a < i for a in n.args), f"node {i} uses a later node"
        assert list(n.axes) == [a for a in layer.axes if a in n.axes], f"node {i}: axes out of order"
        if n.op in UNARY or n.op is Op.ROUND:
            assert len(n.args) == 1 and g[n.args[0]].axes == n.axes, f"node {i}: unary axes"
        elif n.op in BINARY:
            union = set(g[n.args[0]].axes) | set(g[n.args[1]].axes)
            assert len(n.args) == 2 and set(n.axes) == union, f"node {i}: binary axes"
        elif n.op is Op.SUM:
            assert set(n.axes) == set(g[n.args[0]].axes) - {n.attr}, f"node {i}: sum axes"
        elif n.op is Op.EXPAND:
            assert set(n.axes) == set(g[n.args[0]].axes) | set(n.attr), f"node {i}: expand axes"
        elif n.op is Op.SHIFT:
            assert set(n.axes) == set(g[n.args[0]].axes) | {n.attr} - {None}, f"node {i}: shift axes"
        elif n.op is Op.UNSHIFT:
            assert set(n.axes) == set(g[n.args[0]].axes) - {n.attr}, f"node {i}: unshift axes"
        elif n.op is Op.INDEX:
            assert not n.args and n.axes == (n.attr,), f"node {i}: index axes"
        elif n.op is Op.POSITION:
            assert not n.args and not n.axes, f"node {i}: position axes"
        elif n.op is Op.RENAME:
            mapping = dict(n.attr)
            src = g[n.args[0]].axes
            assert set(n.axes) == {mapping.get(a, a) for a in src}, f"node {i}: rename axes"
            assert all(layer.sizes[o] == layer.sizes[m] for o, m in mapping.items()), "rename sizes"
    cell = layer.cell_nodes()
    assert not any(g[i].op in SEQUENCE for i in cell), "a shift, position or rounding inside the cell"
    for s, node in layer.next_state.items():
        assert g[node].axes == layer.states[s], f"state {s}: update has axes {g[node].axes}"
