"""The chunked strategy's class: recurrences that are linear in the state (the cell that runs them,
on tensor cores: ``codegen/run/chunked.py``).

``linear_form(cell)`` reads a cell of one state symbolically (``codegen/classify.py`` applies it to
every state of a cell, after its max-plus scans): every state-dependent value is kept as a linear
function of the state, a sum of three kinds of terms (per head, ``i`` the key axis that the spec
contracts, ``j`` the value axes)::

    diag   c ⊙ S                        c: a per-token coefficient (decay)
    low    a ⊗ (Σ_i b[i] S[i, :])        a rank-one correction read from the state
    write  k ⊗ v                         a per-token outer product (no state)

Elementwise products with per-token values scale the coefficients, sums add terms, ``sum[i]``
turns ``diag`` into ``low``; anything else applied to a state-dependent value (``tanh``, a product of
two state-dependent values, a sum over a non-key axis) refuses the class with its reason. The new
state must come out as ``S' = diag(w) S + a (bᵀS) + k vᵀ`` (at most one rank-one correction and one
write after merging terms that share a factor) and the readout as ``g ⊙ (S'ᵀ q) + p``. Where ``a`` and
``k`` are multiples of one key-side value (``_joint``), the form is joint: one rank-one term
``k (bᵀS + v)ᵀ``, which the kernels run with half the intra-chunk products.

``classify`` and ``classification`` (``codegen/classify.py``) say whether a whole cell is in the
class. The coefficients become nodes of a per-token graph, evaluated in parallel over (batch, time) before
the chunked kernels (``codegen/run/chunked_kernels.py``); they compute ``o_t = S_tᵀ q_t`` and the
final state, and ``g ⊙ o + p`` and the spec's readout (``split_readout``) are evaluated after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archdsl.autodiff import Cell
from archdsl.ir import Graph, Kind, Node, Op, positive

OLD, NEW = "S", "S'"


class NotLinear(Exception):
    """The reason a cell is not in the chunked class."""


class ReadoutNotLinear(NotLinear):
    """The update is in the class, its readout (as cut) is not."""


@dataclass
class Lin:
    """A state-dependent value as a linear function of the state ``var`` (coefficient None = 1)."""

    var: str
    diag: list = field(default_factory=list)  # [c]
    low: list = field(default_factory=list)  # [(a, b)]
    write: list = field(default_factory=list)  # [(k side, v side)]


@dataclass(frozen=True)
class LinearForm:
    """``S' = diag(exp(log_w)) S + a (bᵀ S) + k vᵀ``, ``y = g ⊙ (S'ᵀ q) + p``, per head.

    Coefficients are nodes of ``graph`` (the cell's graph plus the coefficient nodes)."""

    cell: Cell
    graph: Graph
    state: str
    key: str
    heads: tuple[str, ...]
    values: tuple[str, ...]
    log_w: int
    scalar_decay: bool  # log_w has no key axis: one decay per head
    a: int | None
    b: int | None
    k: int
    v: int
    q: int
    out: int  # the loop's output from the INPUT leaf ``o`` (axes heads + values)
    o_leaf: int
    #: the head axes the readout sums the op's output over (RetNet's two halves of a rotary key head):
    #: there each head's intra-chunk scores are multiplied as two 16-bit terms (``split_scores``)
    summed: tuple[str, ...] = ()
    #: the correction and the write share their key (``_joint``): ``a`` is ``k`` and the update is
    #: ``diag(w) S + k (bᵀS + v)ᵀ``, one rank-one term a token (GatedDeltaNet, E88 with identity)
    joint: bool = False
    #: a joint form whose read vector is the key again times a per-token value without the key axis,
    #: ``b = σ k``: σ's node (GatedDeltaNet's ``σ = -αβ``), which the kernels read in place of ``b``
    #: (one value a token, not a vector); None otherwise, or where σ does not vary per token
    tie: int | None = None

    def describe(self) -> str:
        s = f"{self.state}[{', '.join(self.cell.states[self.state])}]"
        decay = "one decay per head" if self.scalar_decay else f"a decay per {self.key}"
        low = " + a rank-one correction a (bᵀS)" if self.a is not None else ""
        update = f"{low} + a rank-one write k vᵀ"
        if self.joint:
            update = " + a rank-one delta update k (bᵀS + v)ᵀ (correction and write share the key k)"
        if self.tie is not None:
            update = update.removesuffix(")") + "; b = σ k, one σ a token)"
        summed = f"; the readout sums heads {', '.join(self.summed)}" if self.summed else ""
        return (
            f"chunked: {s} linear in the state, {decay}{update}; "
            f"key axis {self.key}, heads {', '.join(self.heads) or '-'}, "
            f"values {', '.join(self.values) or '-'}{summed}"
        )

    @property
    def split_scores(self) -> bool:
        """Whether the intra-chunk scores are multiplied as two terms of the 16-bit type (hi + lo):
        where the readout sums heads, their outputs may cancel, and scores rounded once each to bf16
        (error 2⁻⁹ of each head's) would leave the sum with the rounding of its parts (RetNet at 100M:
        4.7e-2 off its bf16 reference in a token whose halves cancel, 5.1e-3 split)."""
        return bool(self.summed)


class _Builder:
    """Adds coefficient nodes to a copy of the cell graph (axes: the union of the arguments')."""

    def __init__(self, cell: Cell):
        self.g = Graph()
        for n in cell.graph.nodes:
            self.g.add(n)
        self.order = cell.axes

    def add(self, op: Op, args, attr=None, axes=None) -> int:
        if axes is None:
            axes = set().union(*(self.g[a].axes for a in args))
        canon = tuple(a for a in self.order if a in set(axes))
        return self.g.add(Node(op, tuple(args), canon, attr))

    def const(self, x: float) -> int:
        return self.add(Op.CONST, (), float(x), ())

    def mul(self, x, y):
        if x is None or y is None:
            return y if x is None else x
        return self.add(Op.MUL, (x, y))

    def plus(self, x, y):
        one = self.const(1.0)
        return self.add(Op.ADD, (one if x is None else x, one if y is None else y))

    def neg(self, x):
        return self.const(-1.0) if x is None else self.add(Op.NEG, (x,))

    def total(self, xs):
        out = xs[0] if xs[0] is not None else self.const(1.0)
        for x in xs[1:]:
            out = self.plus(out, x)
        return out


class _Walker:
    """Rewrites each state-dependent node of the cell as a :class:`Lin` (memoised)."""

    def __init__(self, cell: Cell, key: str, builder: _Builder):
        self.cell, self.key, self.b = cell, key, builder
        self.kinds = cell.graph.kinds()
        self.new = {n: s for s, n in cell.next_state.items()}
        self.memo: dict[int, Lin | None] = {}
        self.readout = False

    def lin(self, i: int) -> Lin | None:
        if i not in self.memo:
            self.memo[i] = self._lin(i)
        return self.memo[i]

    def _lin(self, i: int) -> Lin | None:
        g, b = self.cell.graph, self.b
        n = g[i]
        if self.readout and i in self.new:
            return Lin(NEW, diag=[None])
        if self.kinds[i] != Kind.RECURRENT:
            return None
        if n.op is Op.STATE:
            return Lin(OLD, diag=[None])
        args = [self.lin(a) for a in n.args]
        if n.op in (Op.ADD, Op.SUB):
            x, y = (args[0] or self.affine(n.args[0])), (args[1] or self.affine(n.args[1]))
            y = self.scale(y, b.const(-1.0)) if n.op is Op.SUB else y
            if x.var != y.var and (x.diag or x.low) and (y.diag or y.low):
                raise NotLinear("the readout reads the state before and after the update: not yet")
            var = x.var if (x.diag or x.low) else y.var
            return Lin(var, x.diag + y.diag, x.low + y.low, x.write + y.write)
        if n.op is Op.NEG:
            return self.scale(args[0], b.const(-1.0))
        if n.op in (Op.MUL, Op.DIV):
            if args[0] is not None and args[1] is not None:
                raise NotLinear(f"{n.op.value} of two state-dependent values: not linear in the state")
            if n.op is Op.DIV and args[1] is not None:
                raise NotLinear("division by a state-dependent value: not linear in the state")
            x, c = (args[0], n.args[1]) if args[0] is not None else (args[1], n.args[0])
            if n.op is Op.DIV:
                c = b.add(Op.DIV, (b.const(1.0), c))
            return self.scale(x, c)
        if n.op is Op.SUM:
            return self.contract(args[0], n.attr)
        if n.op is Op.EXPAND:
            return args[0]
        where = "in the readout" if self.readout else "around the update"
        raise NotLinear(f"{n.op.value} {where}: sequential loop")

    def affine(self, i: int) -> Lin:
        """A per-token value as write terms: a sum of (key-side, value-side) products."""
        return Lin(OLD, write=self.factor(i))

    def factor(self, i: int) -> list:
        g, b = self.b.g, self.b
        n = g[i]
        if n.op is Op.MUL:
            return [
                (b.mul(k1, k2), b.mul(v1, v2))
                for k1, v1 in self.factor(n.args[0])
                for k2, v2 in self.factor(n.args[1])
            ]
        if n.op in (Op.ADD, Op.SUB):
            rest = self.factor(n.args[1])
            if n.op is Op.SUB:
                rest = [(b.neg(k), v) for k, v in rest]
            return self.factor(n.args[0]) + rest
        if n.op is Op.NEG:
            return [(b.neg(k), v) for k, v in self.factor(n.args[0])]
        return [(i, None)] if self.key in n.axes else [(None, i)]

    def scale(self, x: Lin, c: int) -> Lin:
        b = self.b
        on_key = self.key in b.g[c].axes
        return Lin(
            x.var,
            [b.mul(d, c) for d in x.diag],
            [(b.mul(a, c), bb) for a, bb in x.low],
            [(b.mul(k, c), v) if on_key else (k, b.mul(v, c)) for k, v in x.write],
        )

    def contract(self, x: Lin, axis: str) -> Lin:
        if axis != self.key:
            raise NotLinear(
                f"sum over {axis} of a state-dependent value: not a contraction over the key axis"
            )
        b = self.b
        low = [(None, d) for d in x.diag]
        for a, bb in x.low:
            if a is None or self.key not in b.g[a].axes:
                raise NotLinear("a second contraction over the key axis: not yet")
            low.append((b.add(Op.SUM, (a,), self.key, set(b.g[a].axes) - {self.key}), bb))
        write = []
        for k, v in x.write:
            if k is None or self.key not in b.g[k].axes:
                raise NotLinear("a sum over the key axis of a value without it: not yet")
            write.append((b.add(Op.SUM, (k,), self.key, set(b.g[k].axes) - {self.key}), v))
        return Lin(x.var, [], low, write)


def _merge(b: _Builder, pairs: list, what: str) -> tuple | None:
    """One (x, y) pair from terms that share a factor: Σ x y_r = x Σ y_r; None when there are none."""
    if not pairs:
        return None
    if all(p[0] == pairs[0][0] for p in pairs):
        return pairs[0][0], b.total([p[1] for p in pairs])
    if all(p[1] == pairs[0][1] for p in pairs):
        return b.total([p[0] for p in pairs]), pairs[0][1]
    raise NotLinear(f"{what} of rank {len(pairs)}: not yet (rank one only)")


def _factors(b: _Builder, i: int) -> list[int]:
    """The factors of a product of per-token values (through ``mul`` and ``neg``, which gives -1)."""
    n = b.g[i]
    if n.op is Op.MUL:
        return _factors(b, n.args[0]) + _factors(b, n.args[1])
    if n.op is Op.NEG:
        return [b.const(-1.0), *_factors(b, n.args[0])]
    return [i]


def _joint(b: _Builder, key: str, a: int, k: int) -> tuple[int, int | None, int | None] | None:
    """(κ, ρ_a, ρ_k) where the correction's ``a = ρ_a κ`` and the write's ``k = ρ_k κ`` are multiples
    of one key-side value κ by values without the key axis (None: 1), else None. The two rank-one
    terms are then one, ``a (bᵀS) + k vᵀ = κ ((ρ_a b)ᵀS + ρ_k v)ᵀ``, which the chunked kernels run with
    one key tile and one value term in place of two (GatedDeltaNet's ``a = -αβ k̂``, ``k = β k̂``;
    E88's ``a = -k̂``, ``k = k̂``)."""
    fa, fk = _factors(b, a), _factors(b, k)
    keyed = [sorted(f for f in fs if key in b.g[f].axes) for fs in (fa, fk)]
    if not keyed[0] or keyed[0] != keyed[1]:
        return None
    kappa = None
    for f in keyed[0]:
        kappa = b.mul(kappa, f)
    rho = []
    for fs in (fa, fk):
        r = None
        for f in fs:
            if key not in b.g[f].axes:
                r = b.mul(r, f)
        rho.append(r)
    return kappa, rho[0], rho[1]


def _tie(b: _Builder, key: str, read: int, kappa: int, rho_a: int | None) -> int | None:
    """σ where the joint form's read vector ``ρ_a read`` is ``σ κ`` (``read``'s factors with the key
    axis are κ's), σ varying per token (GatedDeltaNet: ``read = k̂``, ``σ = ρ_a = -αβ``); else None
    (E88's σ = -1 is a constant: its kernels read b whole)."""
    same = _joint(b, key, read, kappa)
    if same is None:
        return None
    sigma = b.mul(rho_a, same[1])
    if sigma is None or not any(b.g[j].op is Op.INPUT for j in b.g.ancestors([sigma])):
        return None
    return sigma


def _reads(g: Graph, i: int, state: str) -> bool:
    return any(g[j].op is Op.STATE and g[j].attr == state for j in g.ancestors([i]))


def _key_axis(cell: Cell, state: str | None = None) -> str:
    """The axis the state (``state``, or the cell's one state) is contracted over. Where sums over
    several axes read the state, it is the axis of the innermost ones (no such sum below them), when
    they agree: an outer sum (RetNet's over the two halves of a rotary key head) then belongs to the
    readout, which runs after the loop."""
    g, kinds = cell.graph, cell.graph.kinds()
    if state is None:
        (state,) = cell.states
    state_axes = cell.states[state]
    used = g.ancestors([cell.next_state[state], cell.output])
    sums = {i for i in used if g[i].op is Op.SUM and kinds[g[i].args[0]] == Kind.RECURRENT}
    sums = {i for i in sums if _reads(g, g[i].args[0], state)}
    keys = {g[i].attr for i in sums}
    inner = {g[i].attr for i in sums if not g.ancestors(g[i].args) & sums}
    if len(keys) > 1 and len(inner) == 1 and inner <= set(state_axes):
        keys = inner
    if len(keys) != 1:
        found = ", ".join(sorted(keys)) or "none"
        raise NotLinear(f"one contraction axis of the state expected, found {found}: sequential loop")
    (key,) = keys
    if key not in state_axes:
        raise NotLinear(f"the contraction axis {key} is not an axis of the state: sequential loop")
    return key


def _readout_form(cell: Cell, key: str, b: _Builder):
    walker = _Walker(cell, key, b)
    walker.readout = True
    r = walker.lin(cell.output)
    if r is None or not r.low or r.diag:
        raise NotLinear("the readout is not a contraction of the new state over the key axis")
    if r.var != NEW:  # RWKV-6: o = r^T (S + u k v^T) reads the state before this token's write
        raise NotLinear("the readout reads the state before the update: not yet")
    g_out, q = _merge(b, r.low, "the readout")
    return g_out, q, r


def _linear_form(cell: Cell, b: _Builder | None = None, o_name: str = "o:") -> LinearForm:
    """The cell's one state as a linear form; ``b``: the builder of a graph shared with other forms
    (its nodes those of ``cell.graph``, with the same ids), ``o_name``: the name of the op's output."""
    ((state, state_axes),) = cell.states.items()
    key = _key_axis(cell)
    b = _Builder(cell) if b is None else b
    walker = _Walker(cell, key, b)
    upd = walker.lin(cell.next_state[state])
    if upd is None or not upd.diag:
        raise NotLinear("the new state has no decay term w ⊙ S: not yet")
    w = b.total(upd.diag)
    low = _merge(b, upd.low, "the state correction")
    write = _merge(b, upd.write, "the per-token write")
    if write is None:
        raise NotLinear("the new state has no per-token write: not yet")
    try:
        g_out, q, r = _readout_form(cell, key, b)
    except NotLinear as e:
        raise ReadoutNotLinear(str(e)) from None
    one = b.const(1.0)
    a, bb = (None, None) if low is None else (low[0] or one, low[1] or one)
    k, v, q = write[0] or one, write[1] or one, q or one
    joint = _joint(b, key, a, k) if a is not None else None
    tie = None
    if joint is not None:  # one rank-one term: κ ((ρ_a b)ᵀS + ρ_k v)ᵀ
        k, rho_a, rho_k = joint
        tie = _tie(b, key, bb, k, rho_a)
        a, bb, v = k, b.mul(rho_a, bb), b.mul(rho_k, v)
    if not positive(b.g, w, cell.positive):
        raise NotLinear("a decay that may be zero or negative: not yet (the chunks need its logarithm)")
    log_w = b.g[w].args[0] if b.g[w].op is Op.EXP else b.add(Op.LOG, (w,))
    coeffs = [log_w, k, q] + ([a, bb] if a is not None else [])
    used = set().union(*(b.g[c].axes for c in coeffs))
    if not used <= set(state_axes) or not set(b.g[v].axes) <= set(state_axes) - {key}:
        raise NotLinear("a coefficient carries an axis the state does not have: not yet")
    heads = tuple(x for x in state_axes if x != key and x in used)
    values = tuple(x for x in state_axes if x != key and x not in used)
    o_leaf = b.add(Op.INPUT, (), o_name, heads + values)
    out = b.mul(g_out, o_leaf)
    for kk, vv in r.write:
        out = b.add(Op.ADD, (out, b.mul(kk, vv) if (kk, vv) != (None, None) else one))
    scalar, joint = key not in b.g[log_w].axes, joint is not None
    coefficients = (log_w, scalar, a, bb, k, v, q, out, o_leaf)
    return LinearForm(cell, b.g, state, key, heads, values, *coefficients, joint=joint, tie=tie)
