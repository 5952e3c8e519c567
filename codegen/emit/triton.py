"""Triton source for a cell: ``TRITON[op]`` gives each op's expression; ``emit_module`` writes the
forward kernel, the backward kernel (reverse time, segments recomputed from checkpoints) and their
launchers as one readable module, in the style of flash-linear-attention's ``fused_recurrent.py``.

Naming: ``p_`` pointers, ``b_`` register blocks, ``o_``/``m_`` offsets and masks per axis,
``i_`` program ids; every name derived from the spec comes from the kernel's ``Namespace``
(codegen/emit/names.py), so no spec name can meet another or the emitter's own. Every block has one
dimension per layer axis (size 1 where a value lacks it), the layout the reference interpreter uses too.
"""

from __future__ import annotations

import math

from archdsl.codegen.emit.names import Namespace
from archdsl.codegen.hoist import TokenPart
from archdsl.codegen.plan import Plan

from archdsl.autodiff import GRAD, Backward, Cell
from archdsl.ir import Graph, Kind, Op
from archdsl.reference import rename_permutation

TRITON: dict[Op, str] = {
    Op.INPUT: "",  # leaves are loaded by the kernels' prologues
    Op.PARAM: "",
    Op.STATE: "",
    Op.CONST: "tl.full({shape}, {attr}, tl.float32)",
    Op.NEG: "-{0}",
    Op.EXP: "tl.exp({0})",
    Op.LOG: "tl.log({0})",
    Op.TANH: "_tanh({0})",
    Op.SIGMOID: "tl.sigmoid({0})",
    Op.SOFTPLUS: "_softplus({0})",
    Op.RELU: "tl.maximum({0}, 0.0)",
    Op.ABS: "tl.abs({0})",
    Op.SQRT: "tl.sqrt({0})",
    Op.STEP: "tl.where({0} > 0, 1.0, 0.0)",
    Op.SIGN: "tl.where({0} > 0, 1.0, tl.where({0} < 0, -1.0, 0.0))",
    Op.COS: "tl.cos({0})",
    Op.SIN: "tl.sin({0})",
    Op.ADD: "{0} + {1}",
    Op.SUB: "{0} - {1}",
    Op.MUL: "{0} * {1}",
    Op.DIV: "{0} / {1}",
    Op.MAXIMUM: "tl.maximum({0}, {1})",
    Op.MINIMUM: "tl.minimum({0}, {1})",
    Op.SUM: "tl.sum(tl.where({mask}, {0}, 0.0), axis={axis}, keep_dims=True)",
    Op.RENAME: "tl.permute({0}, {perm})",
    Op.EXPAND: "{0} + tl.zeros({shape}, tl.float32)",
}

HELPERS = """
@triton.jit
def _tanh(x):
    # tanh from exp (portable to the CPU interpreter); a series near 0 keeps relative accuracy
    ax = tl.abs(x)
    e = tl.exp(-2.0 * ax)
    big = (1.0 - e) / (1.0 + e)
    x2 = x * x
    small = ax * (1.0 - x2 / 3.0 * (1.0 - 0.4 * x2))
    r = tl.where(ax < 0.0625, small, big)
    return tl.where(x < 0, -r, r)


@triton.jit
def _log1p(u):
    # log(1 + u) to a few ulps for small u (Goldberg): the rounding of 1 + u cancels out
    w = 1.0 + u
    return tl.where(w == 1.0, u, tl.log(w) * (u / (w - 1.0)))


@triton.jit
def _softplus(x):
    return tl.maximum(x, 0.0) + _log1p(tl.exp(-tl.abs(x)))
"""


def _row_major(name, axes, extents) -> str:
    """``name(a) * stride_a + …`` over ``axes`` laid out row-major with these extents."""
    terms = []
    for k, a in enumerate(axes):
        stride = math.prod(extents[k + 1 :])
        terms.append(name(a) + (f" * {stride}" if stride != 1 else ""))
    return " + ".join(terms)


class _Kernel:
    """Writes the lines of one kernel body; ``ns`` hands out its names derived from the spec."""

    def __init__(self, plan: Plan):
        self.plan, self.lines = plan, []
        self.ns = Namespace()

    def w(self, line: str = "", indent: int = 1) -> None:
        self.lines.append("    " * indent + line if line else "")

    # ---- names derived from the spec ------------------------------------------------------------
    def ax(self, role: str, a: str) -> str:
        """Per-axis names: ``o_h`` offsets, ``m_h`` mask, ``l_h`` local offsets, ``i_h`` tile index."""
        return self.ns((role, a), f"{role}_{a}")

    def ptr(self, kind: str, name: str) -> str:
        """A tensor argument: ``kind`` is ``in`` (per-token inputs, cotangents ``d:y`` too), ``const``,
        ``out`` (a part's outputs, the loop's readout ``y``)."""
        return self.ns((kind, name), f"p_{name}")

    def dptr(self, kind: str, name: str) -> str:
        """The gradient output of an ``in`` or ``const`` argument: ``p_dk``."""
        return self.ns(("d" + kind, name), f"p_d{name}")

    def sptr(self, role: str, s: str) -> str:
        """A state's buffers: ``h0``/``ht`` initial and final, ``ck`` checkpoints, ``dht``/``dh0`` their
        cotangents, ``scr`` the segment's recomputed states."""
        return self.ns((role, s), f"p_{role}_{s}")

    def blk(self, s: str) -> str:
        """The register block a state lives in: ``b_S``."""
        return self.ns(("block", s), f"b_{s}")

    def dblk(self, kind: str, name: str) -> str:
        """The block a cotangent is carried or summed in: ``b_dS`` (state), ``b_dA_log`` (const)."""
        return self.ns(("dblock", kind, name), f"b_d{name}")

    # ---- blocks, offsets, masks -----------------------------------------------------------------
    def shape(self, axes) -> str:
        return "[" + ", ".join(str(self.plan.block[a]) if a in axes else "1" for a in self.plan.axes) + "]"

    def offset(self, axes) -> str:
        """Flat offset block of a compact tensor with these axes (row-major over its own axes)."""
        return _row_major(lambda a: self.ax("o", a), axes, [self.plan.sizes[a] for a in axes]) or "z0"

    def load(self, ptr: str, axes, cond: str | None = None) -> str:
        """A masked load, converted to fp32 (a value with no axes needs no mask)."""
        # the condition is on the step index: z0 + … makes it a block, as Triton's CPU interpreter
        # needs (and a value with no axes gets a block mask that way too)
        block_mask = self.mask(axes) if axes else None
        mask = " & ".join(m for m in (block_mask, f"(z0 + {cond})" if cond else None) if m)
        if not mask:
            return f"tl.load({ptr}).to(tl.float32)"
        return f"tl.load({ptr}, mask={mask}, other=0.0).to(tl.float32)"

    def mask(self, axes) -> str:
        return " & ".join(self.ax("m", a) for a in axes) if axes else "None"

    def local_offset(self, axes) -> str:
        """Flat offset inside a padded register block (for scratch memory)."""
        return _row_major(lambda a: self.ax("l", a), axes, [self.plan.block[a] for a in axes]) or "0"

    def header(self, name: str, sig: list[str], flags: str) -> None:
        """``@triton.jit def name(pointers…, T, flags):`` then the program ids, offsets and masks."""
        self.lines += ["@triton.jit", f"def {name}(", "    " + ", ".join(sig) + ",", f"    T, {flags},", "):"]
        self.prologue()
        self.w("NC = tl.cdiv(T, CHUNK)")

    def load_consts(self, cell: Cell, params: dict[str, int]) -> None:
        """Parameter-only values are loaded once, before the time loop."""
        for c, i in params.items():
            ax = cell.consts[c]
            at = f"{self.ptr('const', c)} + {self.offset(ax)}"
            self.w(f"b{i} = {self.load(at, ax)}  # {c}")

    def prologue(self) -> None:
        p = self.plan
        self.w("i_b = tl.program_id(0).to(tl.int64)")
        self.w("i_s = tl.program_id(1)")
        rest = "i_s"
        for a in reversed(p.split):
            self.w(f"{self.ax('i', a)} = {rest} % {p.tiles[a]}")
            rest = f"({rest} // {p.tiles[a]})"
        K = len(p.axes)
        for k, a in enumerate(p.axes):
            idx = ", ".join(":" if j == k else "None" for j in range(K))
            start = f"{self.ax('i', a)} * {p.block[a]} + " if a in p.split else ""
            self.w(f"{self.ax('l', a)} = tl.arange(0, {p.block[a]})[{idx}]")
            self.w(f"{self.ax('o', a)} = {start}{self.ax('l', a)}")
            self.w(f"{self.ax('m', a)} = {self.ax('o', a)} < {p.sizes[a]}")
        self.w(f"z0 = tl.zeros({self.shape(())}, tl.int32)  # offset of a value with no axes")

    def node_expr(self, g: Graph, i: int) -> str:
        n = g[i]
        args = [f"b{a}" for a in n.args]
        tmpl = TRITON[n.op]
        if n.op is Op.SUM:
            return tmpl.format(*args, mask=self.ax("m", n.attr), axis=self.plan.axes.index(n.attr))
        if n.op is Op.RENAME:
            return tmpl.format(*args, perm=tuple(rename_permutation(self.plan.axes, n.attr)))
        if n.op in (Op.EXPAND, Op.CONST):
            attr = n.attr if n.op is Op.EXPAND or math.isfinite(n.attr) else f"float('{n.attr}')"
            return tmpl.format(*args, shape=self.shape(n.axes), attr=attr)
        return tmpl.format(*args)

    def compute(self, g: Graph, order, indent: int, skip=()) -> None:
        for i in order:
            n = g[i]
            if n.op in (Op.INPUT, Op.PARAM, Op.STATE) or i in skip:
                continue
            self.w(f"b{i} = {self.node_expr(g, i)}", indent)


LEAVES = (Op.INPUT, Op.PARAM, Op.STATE, Op.CONST)


def _needed(g: Graph, roots) -> list[int]:
    return sorted(g.ancestors(roots))


def _leaf_ids(g: Graph, order, op: Op) -> dict[str, int]:
    return {g[i].attr: i for i in order if g[i].op is op}


def _numel(plan: Plan, axes) -> int:
    return math.prod(plan.sizes[a] for a in axes)


def emit_forward(cell: Cell, plan: Plan, name: str) -> str:
    g = cell.graph
    order = _needed(g, [*cell.next_state.values(), cell.output])
    ins, consts = list(cell.inputs), list(cell.consts)
    states = list(cell.states)
    k = _Kernel(plan)
    sig = [k.ptr("in", n) for n in ins] + [k.ptr("const", c) for c in consts]
    sig += [k.sptr("h0", s) for s in states]
    p_y = k.ptr("out", "y")
    sig += [p_y] + [k.sptr("ht", s) for s in states] + [k.sptr("ck", s) for s in states]
    k.header(f"{name}_fwd_kernel", sig, "USE_H0: tl.constexpr, CHUNK: tl.constexpr")
    k.load_consts(cell, _leaf_ids(g, order, Op.PARAM))
    st_ids = _leaf_ids(g, order, Op.STATE)
    for s in states:
        ax = cell.states[s]
        k.w(f"{k.blk(s)} = tl.zeros({k.shape(ax)}, tl.float32)")
        k.w("if USE_H0:")
        h0 = f"{k.sptr('h0', s)} + i_b * {_numel(plan, ax)} + {k.offset(ax)}"
        k.w(f"{k.blk(s)} += {k.load(h0, ax)}", 2)
    loads = _token_loads(k, cell, g, order)
    _prefetch_first(k, loads, "0", 1)
    k.w("for t in range(T):")
    _prefetch_next(k, loads, "t + 1", "t + 1 < T", 2)
    k.w("if t % CHUNK == 0:", 2)
    for s in states:
        ax = cell.states[s]
        at = f"{k.sptr('ck', s)} + (i_b * NC + t // CHUNK) * {_numel(plan, ax)} + {k.offset(ax)}"
        k.w(f"tl.store({at}, {k.blk(s)}, mask={k.mask(ax)})", 3)
    for s, i in st_ids.items():
        k.w(f"b{i} = {k.blk(s)}", 2)
    k.compute(g, order, 2)
    y_ax = cell.output_axes
    k.w(
        f"tl.store({p_y} + (i_b * T + t) * {_numel(plan, y_ax)} + {k.offset(y_ax)}, "
        f"b{cell.output}.to({p_y}.dtype.element_ty), mask={k.mask(y_ax)})",
        2,
    )
    for s in states:
        ax = cell.states[s]
        k.w(f"{k.blk(s)} = tl.where({k.mask(ax)}, b{cell.next_state[s]}, 0.0)", 2)
    for s in states:
        ax = cell.states[s]
        at = f"{k.sptr('ht', s)} + i_b * {_numel(plan, ax)} + {k.offset(ax)}"
        k.w(f"tl.store({at}, {k.blk(s)}, mask={k.mask(ax)})")
    return "\n".join(k.lines)


def _token_loads(k: _Kernel, cell: Cell, g: Graph, order) -> list[tuple[int, str, tuple]]:
    """(node, pointer at time ``{t}``, axes) of every per-token tensor the step reads (the cell's
    inputs, and in a backward the cotangents ``d:…`` of its outputs)."""
    out = []
    for n, i in _leaf_ids(g, order, Op.INPUT).items():
        ax = g[i].axes
        out.append((i, f"{k.ptr('in', n)} + (i_b * T + ({{t}})) * {_numel(k.plan, ax)} + {k.offset(ax)}", ax))
    return out


def _prefetch_first(k: _Kernel, loads, t_first: str, indent: int) -> None:
    """Load the first step's per-token tensors before the loop."""
    for i, ptr, ax in loads:
        k.w(f"n{i} = {k.load(ptr.format(t=t_first), ax)}", indent)


def _prefetch_next(k: _Kernel, loads, t_next: str, valid: str, indent: int) -> None:
    """Take this step's tensors and issue the next step's loads, which then overlap the step's math."""
    for i, ptr, ax in loads:
        k.w(f"b{i} = n{i}", indent)
        k.w(f"n{i} = {k.load(ptr.format(t=t_next), ax, valid)}", indent)


def stash_nodes(cell: Cell, bwd: Backward) -> dict[int, str | None]:
    """Forward values the reverse walk reads back instead of recomputing: the state-dependent values
    that backward-only nodes read (E88: the new state S' and delta). The segment recompute stores them
    per step; a value that is a new state is the next step's state, already in the state's scratch
    (-> that state's name), the others get a buffer of their own (-> None)."""
    g, n_fwd = bwd.graph, len(cell.graph)
    kinds = cell.graph.kinds()
    outs = [*bwd.d_state.values(), *bwd.d_inputs.values(), *bwd.d_consts.values()]
    stash: dict[int, str | None] = {}
    for i in _needed(g, outs):
        for a in g[i].args if i >= n_fwd else ():
            if a < n_fwd and g[a].op not in LEAVES and kinds[a] == Kind.RECURRENT:
                stash[a] = next((s for s, v in cell.next_state.items() if v == a), None)
    return dict(sorted(stash.items()))


def missing_split(plan: Plan, axes) -> tuple[str, ...]:
    return tuple(a for a in plan.split if a not in axes)


def emit_backward(cell: Cell, bwd: Backward, plan: Plan, name: str) -> str:
    g = bwd.graph
    states, ins, consts = list(cell.states), list(cell.inputs), list(cell.consts)
    outs = [*bwd.d_state.values(), *bwd.d_inputs.values(), *bwd.d_consts.values()]
    stash = stash_nodes(cell, bwd)
    own = [i for i, s in stash.items() if s is None]
    order = sorted(g.ancestors(outs, stop=stash))  # values in the stash are read, not recomputed
    fwd_order = _needed(cell.graph, [*cell.next_state.values(), *stash])
    k = _Kernel(plan)
    sig = [k.ptr("in", n) for n in ins] + [k.ptr("const", c) for c in consts]
    sig += [k.sptr("ck", s) for s in states] + [k.ptr("in", GRAD + "y")]
    sig += [k.sptr("dht", s) for s in states] + [k.sptr("scr", s) for s in states]
    sig += [f"p_stash{i}" for i in own]
    sig += [k.dptr("in", n) for n in ins] + [k.dptr("const", c) for c in consts]
    sig += [k.sptr("dh0", s) for s in states]
    k.header(f"{name}_bwd_kernel", sig, "USE_DHT: tl.constexpr, CHUNK: tl.constexpr")
    k.w(f"pid = i_b * {plan.n_tiles} + i_s")
    k.load_consts(cell, {**_leaf_ids(cell.graph, fwd_order, Op.PARAM), **_leaf_ids(g, order, Op.PARAM)})
    for c in consts:
        k.w(f"{k.dblk('const', c)} = tl.zeros({k.shape(cell.consts[c])}, tl.float32)")
    for s in states:
        ax = cell.states[s]
        k.w(f"{k.dblk('state', s)} = tl.zeros({k.shape(ax)}, tl.float32)")
        k.w("if USE_DHT:")
        dht = f"{k.sptr('dht', s)} + i_b * {_numel(plan, ax)} + {k.offset(ax)}"
        k.w(f"{k.dblk('state', s)} += {k.load(dht, ax)}", 2)
    k.w("for i_c in range(NC):")
    k.w("c = NC - 1 - i_c", 2)
    k.w("t0 = c * CHUNK", 2)
    k.w("L = tl.minimum(T - t0, CHUNK)", 2)

    def scratch(s: str, step: str) -> str:
        sz = math.prod(plan.block[a] for a in cell.states[s])
        return f"{k.sptr('scr', s)} + (pid * (CHUNK + 1) + {step}) * {sz} + {k.local_offset(cell.states[s])}"

    # 1) recompute the segment's states from its checkpoint into scratch
    st_fwd = _leaf_ids(cell.graph, fwd_order, Op.STATE)
    for s in states:
        ax = cell.states[s]
        ck = f"{k.sptr('ck', s)} + (i_b * NC + c) * {_numel(plan, ax)} + {k.offset(ax)}"
        k.w(f"{k.blk(s)} = {k.load(ck, ax)}", 2)
    rec_loads = _token_loads(k, cell, cell.graph, fwd_order)
    _prefetch_first(k, rec_loads, "t0", 2)
    k.w("for s in range(L):", 2)
    k.w("t = t0 + s", 3)
    _prefetch_next(k, rec_loads, "t + 1", "s + 1 < L", 3)
    for s in states:
        k.w(f"tl.store({scratch(s, 's')}, {k.blk(s)})", 3)
    for s, i in st_fwd.items():
        k.w(f"b{i} = {k.blk(s)}", 3)
    k.compute(cell.graph, fwd_order, 3)
    for i in own:
        sz = math.prod(plan.block[a] for a in g[i].axes)
        k.w(f"tl.store(p_stash{i} + (pid * CHUNK + s) * {sz} + {k.local_offset(g[i].axes)}, b{i})", 3)
    for s in states:
        k.w(f"{k.blk(s)} = tl.where({k.mask(cell.states[s])}, b{cell.next_state[s]}, 0.0)", 3)
    for s in states:  # the segment's last new state: read back as S' by its last step
        k.w(f"tl.store({scratch(s, 'L')}, {k.blk(s)})", 2)
    k.w("tl.debug_barrier()", 2)
    # 2) walk the segment backwards
    bwd_loads = _token_loads(k, cell, g, order)
    _prefetch_first(k, bwd_loads, "t0 + L - 1", 2)
    k.w("for s2 in range(L):", 2)
    k.w("s = L - 1 - s2", 3)
    k.w("t = t0 + s", 3)
    _prefetch_next(k, bwd_loads, "t - 1", "s > 0", 3)
    leaves = _leaf_ids(g, order, Op.STATE)
    for s in states:
        if s in leaves:
            k.w(f"b{leaves[s]} = tl.load({scratch(s, 's')})", 3)
        if GRAD + s in leaves:
            k.w(f"b{leaves[GRAD + s]} = {k.dblk('state', s)}", 3)
    for i, s in stash.items():  # values of this step stored by the recompute
        if s is not None:
            k.w(f"b{i} = tl.load({scratch(s, 's + 1')})", 3)
        else:
            sz = math.prod(plan.block[a] for a in g[i].axes)
            k.w(f"b{i} = tl.load(p_stash{i} + (pid * CHUNK + s) * {sz} + {k.local_offset(g[i].axes)})", 3)
    k.compute(g, order, 3, skip=stash)
    for n in ins:
        ax = cell.inputs[n]
        miss = missing_split(plan, ax)
        nt = math.prod(plan.tiles[a] for a in miss)
        idx = _tile_index(k, miss)
        val = f"b{bwd.d_inputs[n]}" + (
            f" + tl.zeros({k.shape(ax)}, tl.float32)" if g[bwd.d_inputs[n]].op is Op.EXPAND else ""
        )
        at = f"{k.dptr('in', n)} + ((i_b * T + t) * {nt} + {idx}) * {_numel(plan, ax)} + {k.offset(ax)}"
        k.w(f"tl.store({at}, {val}, mask={k.mask(ax)})", 3)
    for c in consts:
        k.w(f"{k.dblk('const', c)} += b{bwd.d_consts[c]}", 3)
    for s in states:
        k.w(f"{k.dblk('state', s)} = tl.where({k.mask(cell.states[s])}, b{bwd.d_state[s]}, 0.0)", 3)
    k.w("tl.debug_barrier()", 2)
    for s in states:
        ax = cell.states[s]
        at = f"{k.sptr('dh0', s)} + i_b * {_numel(plan, ax)} + {k.offset(ax)}"
        k.w(f"tl.store({at}, {k.dblk('state', s)}, mask={k.mask(ax)})")
    for c in consts:
        ax = cell.consts[c]
        at = f"{k.dptr('const', c)} + pid * {_numel(plan, ax)} + {k.offset(ax)}"
        k.w(f"tl.store({at}, {k.dblk('const', c)}, mask={k.mask(ax)})")
    return "\n".join(k.lines)


def _tile_index(k: _Kernel, axes) -> str:
    idx = "0"
    for a in axes:
        idx = f"({idx}) * {k.plan.tiles[a]} + {k.ax('i', a)}" if idx != "0" else k.ax("i", a)
    return idx


def emit_token_forward(part: TokenPart, plan: Plan, name: str, kind: str = "token") -> str:
    """A stateless per-token part (the values hoisted before the loop, or the readout after it):
    one program per (batch element, CHUNK tokens), no recurrence."""
    g = part.graph
    order = _needed(g, part.outputs.values())
    k = _Kernel(plan)
    sig = [k.ptr("in", n) for n in part.inputs] + [k.ptr("const", c) for c in part.consts]
    sig += [k.ptr("out", o) for o in part.outputs]
    k.header(f"{name}_{kind}_fwd_kernel", sig, "CHUNK: tl.constexpr")
    k.load_consts(part, _leaf_ids(g, order, Op.PARAM))
    loads = _token_loads(k, part, g, order)
    k.w("for s in range(CHUNK):")
    k.w("t = i_s * CHUNK + s  # this program's tokens: i_s * CHUNK …", 2)
    for i, ptr, ax in loads:
        k.w(f"b{i} = {k.load(ptr.format(t='t'), ax, 't < T')}", 2)
    k.compute(g, order, 2)
    for o, i in part.outputs.items():
        _store_token(k, k.ptr("out", o), g[i].axes, f"b{i}", 2, cast=False)
    return "\n".join(k.lines)


def emit_token_backward(part: TokenPart, plan: Plan, name: str, kind: str = "token") -> str:
    """Its derived backward: cotangents of its outputs -> gradients of its inputs and constants."""
    bwd = part.backward
    g = bwd.graph
    order = _needed(g, [*bwd.d_inputs.values(), *bwd.d_consts.values()])
    k = _Kernel(plan)
    sig = [k.ptr("in", n) for n in part.inputs] + [k.ptr("const", c) for c in part.consts]
    sig += [k.ptr("in", GRAD + o) for o in part.outputs]
    sig += [k.dptr("in", n) for n in part.inputs] + [k.dptr("const", c) for c in part.consts]
    k.header(f"{name}_{kind}_bwd_kernel", sig, "CHUNK: tl.constexpr")
    k.w("pid = i_b * NC + i_s")
    k.load_consts(part, _leaf_ids(g, order, Op.PARAM))
    for c in part.consts:
        k.w(f"{k.dblk('const', c)} = tl.zeros({k.shape(part.consts[c])}, tl.float32)")
    loads = _token_loads(k, part, g, order)
    k.w("for s in range(CHUNK):")
    k.w("t = i_s * CHUNK + s", 2)
    for i, ptr, ax in loads:
        k.w(f"b{i} = {k.load(ptr.format(t='t'), ax, 't < T')}", 2)
    k.compute(g, order, 2)
    for n, ax in part.inputs.items():
        val = f"b{bwd.d_inputs[n]}" + (
            f" + tl.zeros({k.shape(ax)}, tl.float32)" if g[bwd.d_inputs[n]].op is Op.EXPAND else ""
        )
        _store_token(k, k.dptr("in", n), ax, val, 2, cast=True)
    for c in part.consts:  # tokens past T loaded zeros: their terms may not be finite, so mask them
        k.w(f"{k.dblk('const', c)} += tl.where(z0 + t < T, b{bwd.d_consts[c]}, 0.0)", 2)
    for c, ax in part.consts.items():
        at = f"{k.dptr('const', c)} + pid * {_numel(plan, ax)} + {k.offset(ax)}"
        k.w(f"tl.store({at}, {k.dblk('const', c)}, mask={k.mask(ax)})")
    return "\n".join(k.lines)


def _store_token(k: _Kernel, ptr: str, ax, val: str, indent: int, cast: bool) -> None:
    mask = " & ".join(m for m in (k.mask(ax) if ax else None, "(z0 + t < T)") if m)
    if cast:
        val = f"({val}).to({ptr}.dtype.element_ty)"
    at = f"{ptr} + (i_b * T + t) * {_numel(k.plan, ax)} + {k.offset(ax)}"
    k.w(f"tl.store({at}, {val}, mask={mask})", indent)
