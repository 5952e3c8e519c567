"""Persistent kernels for a dense recurrence: a step that mixes the whole state through learned
matrices (``sum[j](W_h * h[j])`` in E1, E10, E63, LSTM, GRU) runs as ONE forward and ONE backward
launch over the whole sequence instead of a GEMM and a kernel launch per step.

The grid has one program per tile of ``R`` state rows (times batch blocks of at most 128). Each step a
program reads the previous state of every row (all columns, from a time-major history buffer in the
input dtype, through L2), multiplies
it by its ``R`` rows of each matrix with ``tl.dot`` (fp32 accumulation), runs the rest of the step
(the *step cell* of ``codegen/run/dense.py``: the cell with each contraction replaced by an input
``mv<k>``) on its tile with the same per-op Triton rules as the fused loop, stores its rows of the
new state and arrives at a grid barrier: an atomic counter (release) that every program then waits
on (acquire) before the next step reads the state. All programs must be resident at once, so the
grid is launched persistently only when it fits on the GPU's SMs.

The backward walks time in reverse with the same barrier: the cotangent of a program's rows of the
state is its own carried share plus ``sum_i W[i, R] g_{t+1}[b, i]`` (``g`` the cotangent of each
``mv``, written by every program in the previous iteration); the derived backward of the step cell
then gives ``g_t``, the carried share and the per-token and parameter gradients of the tile. The
matrices' gradients are one GEMM per matrix over all steps, in PyTorch, after the kernel.

Both kernels take the step range ``[t_lo, t_hi)`` at run time. Triton's CPU interpreter runs the
programs of a launch one after another, so a spinning barrier would never release there; it (and a
grid too large to be resident) launches one step per call instead, and the launch boundary is the
barrier. The same kernel source runs both ways; the sequence length is a run-time argument.

Applies when every contraction's operand is a state renamed onto the contracted axis (``h[j]``), the
state has exactly the rows' axis, and the step cell is pointwise over that axis (it never sums over
it or renames it, and every state and the readout carry it). Otherwise ``DenseCell`` is the fallback.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import torch
import triton.language as tl
from archdsl.codegen.emit.module import _equations
from archdsl.codegen.emit.names import module_name
from archdsl.codegen.emit.triton import HELPERS, _Kernel, _leaf_ids, _needed, _row_major
from archdsl.codegen.plan import Plan, next_pow2
from archdsl.codegen.run.dense import MatVec, mv_name, step_cell

from archdsl.autodiff import GRAD, Backward, Cell, derive_backward
from archdsl.ir import LayerIR, Op

BATCH = "_b"  # the batch axis of the register blocks (every program holds a block of batch rows)
MAX_BLOCK_B = 128  # batch rows per program; more batch means more programs
MAX_TILES = 128  # default rows per program: the smallest tile that needs at most this many programs
DOT_MIN = 16  # tl.dot needs every dimension >= 16

SYNC = """
@triton.jit
def _grid_arrive(p_sync):
    # every thread's stores of this step are done (bar.sync), then one release increment
    tl.debug_barrier()
    tl.atomic_add(p_sync, 1, sem="release")


@triton.jit
def _grid_wait(p_sync, target):
    # spin on plain (volatile) reads until every program has arrived `target` times, then one
    # acquire read so that their stores are visible; after 2**24 polls give up and raise the flag
    # at p_sync + 1 rather than hang the GPU
    n = tl.load(p_sync, volatile=True)
    polls = 0
    while (n < target) & (polls < 16777216):
        n = tl.load(p_sync, volatile=True)
        polls += 1
    n = tl.atomic_add(p_sync, 0, sem="acquire")
    if n < target:
        tl.store(p_sync + 1, 1)
    tl.debug_barrier()
"""


@dataclass(frozen=True)
class DenseLayout:
    """How the contractions map onto the persistent grid."""

    rows: str  # the state axis tiled across programs (the rows of every matrix)
    operand: tuple[str, ...]  # per matvec: the state it reads (renamed onto the contracted axis)
    contracted: tuple[str, ...]  # per matvec: the contracted axis
    row_major: tuple[bool, ...]  # per matvec: the matrix's axes are (rows, contracted) in layout order


def _live(cell: Cell) -> set[int]:
    return cell.graph.ancestors([*cell.next_state.values(), cell.output])


def pointwise_axes(cell: Cell) -> tuple[str, ...]:
    """Axes the step never mixes, looking only at the nodes the step needs (``plan.splittable_axes``
    over the live graph: a step cell still holds the replaced contractions' dead operands)."""
    mixed: set[str] = set()
    for i in _live(cell):
        n = cell.graph[i]
        if n.op is Op.SUM:
            mixed.add(n.attr)
        elif n.op is Op.RENAME:
            for a, b in n.attr:
                mixed.update((a, b))
    must_have = [*cell.states.values(), cell.output_axes]
    return tuple(a for a in cell.axes if a not in mixed and all(a in ax for ax in must_have))


def dense_layout(cell: Cell, matvecs: list[MatVec], step: Cell) -> DenseLayout | None:
    """The persistent layout of a dense cell, or None when it does not apply (see the module doc)."""
    if not matvecs:
        return None
    g = cell.graph
    rows, operands, contracted, row_major = None, [], [], []
    for m in matvecs:
        v = g[m.operand]
        if v.op is not Op.RENAME or len(v.attr) != 1 or g[v.args[0]].op is not Op.STATE:
            return None
        (src, dst), state = v.attr[0], g[v.args[0]].attr
        w_axes = cell.consts[m.const]
        if (
            dst != m.axis
            or cell.states[state] != (src,)
            or g[m.node].axes != (src,)
            or set(w_axes) != {src, m.axis}
            or rows not in (None, src)
        ):
            return None
        rows = src
        operands.append(state)
        contracted.append(m.axis)
        row_major.append(w_axes == (src, m.axis))
    if rows not in pointwise_axes(step):
        return None
    live_axes = {a for i in _live(step) for a in step.graph[i].axes}
    if live_axes & set(contracted):
        return None  # the rest of the step would need whole rows of the contracted axis
    return DenseLayout(rows, tuple(operands), tuple(contracted), tuple(row_major))


# ---- code generation -------------------------------------------------------------------------------


class _PKernel(_Kernel):
    """A kernel body over blocks ``[BLOCK_B, *layer axes]``: the batch rows of the program first."""

    def __init__(self, plan: Plan, lay: DenseLayout):
        super().__init__(plan)
        self.lay = lay
        self.D = plan.sizes[lay.rows]
        self.R = plan.block[lay.rows]

    def full_shape(self, axes) -> str:
        return "[" + ", ".join(str(self.plan.block[a]) if a in axes else "1" for a in self.plan.axes) + "]"

    def ax(self, role: str, a: str) -> str:
        """The batch axis's names are the emitter's own (``o__b``); the layer axes' as in the loop."""
        return f"{role}_{a}" if a == BATCH else super().ax(role, a)

    def off(self, axes) -> str:
        return _row_major(lambda a: self.ax("o", a), axes, [self.plan.sizes[a] for a in axes]) or "z0"

    def bmask(self, axes) -> str:
        return " & ".join(["m__b", *(self.ax("m", a) for a in axes)])

    def numel(self, axes) -> int:
        return math.prod(self.plan.sizes[a] for a in axes)

    def at(self, ptr: str, axes, t: str, steps: str) -> str:
        """Pointer block of a per-step tensor ``[B, steps, *axes]`` at step ``t``."""
        return f"{ptr} + (o__b * {steps} + {t}) * {self.numel(axes)} + {self.off(axes)}"

    def at_b(self, ptr: str, axes) -> str:
        return f"{ptr} + o__b * {self.numel(axes)} + {self.off(axes)}"

    def load_full(self, ptr: str, axes, extra: str = "") -> str:
        return f"tl.load({ptr}, mask={self.bmask(axes)}, other=0.0{extra}).to(tl.float32)"

    def to_layout(self, acc: str) -> str:
        """A ``[BLOCK_B, R]`` dot result as a block over the layer's layout."""
        idx = ", ".join(":" if a in (BATCH, self.lay.rows) else "None" for a in self.plan.axes)
        return f"{acc}[{idx}]"

    def prologue(self) -> None:
        p, lay = self.plan, self.lay
        K = len(p.axes)
        self.w("pid = tl.program_id(0)")
        self.w("NP = tl.num_programs(0)")
        self.w(f"i_r = pid % {p.tiles[lay.rows]}  # the program's tile of rows")
        self.w(f"i_bb = pid // {p.tiles[lay.rows]}  # its block of batch rows")
        for k, a in enumerate(p.axes):
            if a != BATCH and p.block[a] == 1 and p.sizes[a] != 1:
                continue  # an axis the step never holds (a contracted axis)
            idx = ", ".join(":" if j == k else "None" for j in range(K))
            if a == BATCH:
                self.w(f"l__b = tl.arange(0, BLOCK_B)[{idx}]")
                self.w("o__b = (i_bb * BLOCK_B + l__b).to(tl.int64)")
                self.w("m__b = o__b < B")
                continue
            start = f"i_r * {p.block[a]} + " if a == lay.rows else ""
            self.w(f"{self.ax('l', a)} = tl.arange(0, {p.block[a]})[{idx}]")
            self.w(f"{self.ax('o', a)} = {start}{self.ax('l', a)}")
            self.w(f"{self.ax('m', a)} = {self.ax('o', a)} < {p.sizes[a]}")
        self.w(f"z0 = tl.zeros({self.shape(())}, tl.int32)  # offset of a value with no axes")
        self.w("# the same rows as 2-D index vectors, for the matrix products")
        self.w("rb = (i_bb * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)")
        self.w(f"rn = i_r * {self.R} + tl.arange(0, {self.R})")
        self.w("rk = tl.arange(0, BLOCK_K)")

    def header(self, name: str, sig: list[str]) -> None:
        self.lines += [
            "@triton.jit",
            f"def {name}(",
            "    " + ", ".join(sig) + ",",
            "    B, T, t_lo, t_hi,",
            "    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, DOT_T: tl.constexpr, DOT_PREC: tl.constexpr,",
            "    PERSISTENT: tl.constexpr,",
            "):",
        ]
        self.prologue()

    def at_tm(self, ptr: str, axes, t: str) -> str:
        """Pointer block of a time-major tensor ``[steps, B, *axes]`` at step ``t``."""
        return f"{ptr} + (({t}) * B + o__b) * {self.numel(axes)} + {self.off(axes)}"

    def matmul(self, accs: dict[int, tuple[str, str]], t: str, indent: int) -> None:
        """``acc<k>[b, r] = sum_q A_k[t, b, q] M_k[q, r]`` over the tile's rows ``r``, for every
        ``k`` in ``accs`` (k -> (A pointer, M pointer)); ``A`` is time-major (a step's rows are one
        contiguous block) and read through L2 (other programs wrote it since this program's last
        step)."""
        D = self.D
        for k in accs:
            self.w(f"acc{k} = tl.zeros([BLOCK_B, {self.R}], tl.float32)", indent)
        self.w(f"for q0 in range(0, {D}, BLOCK_K):", indent)
        self.w("rq = q0 + rk", indent + 1)
        loaded = {}
        for k, (a_ptr, m_ptr) in accs.items():
            if a_ptr not in loaded:
                loaded[a_ptr] = f"a{len(loaded)}"
                self.w(
                    f"{loaded[a_ptr]} = tl.load({a_ptr} + (({t}) * B + rb[:, None]) * {D} + rq[None, :], "
                    f"mask=(rb[:, None] < B) & (rq[None, :] < {D}), other=0.0, cache_modifier='.cg')",
                    indent + 1,
                )
            self.w(
                f"w{k} = tl.load({m_ptr} + rq[:, None] * {D} + rn[None, :], "
                f"mask=(rq[:, None] < {D}) & (rn[None, :] < {D}), other=0.0)",
                indent + 1,
            )
            a, w = f"{loaded[a_ptr]}.to(DOT_T)", f"w{k}.to(DOT_T)"
            self.w(f"acc{k} = tl.dot({a}, {w}, acc{k}, input_precision=DOT_PREC)", indent + 1)


def make_dense_plan(cell: Cell, step: Cell, lay: DenseLayout, rows: int, num_warps: int) -> Plan:
    """Blocks over ``(batch, *layer axes)``: the tile of rows, the step's other axes whole, the
    contracted axes absent (the step never holds them)."""
    live_axes = {a for i in _live(step) for a in step.graph[i].axes}
    live_axes |= {a for ax in cell.states.values() for a in ax} | set(cell.output_axes)
    block, tiles = {BATCH: "BLOCK_B"}, {}
    for a in cell.axes:
        if a == lay.rows:
            block[a], tiles[a] = rows, math.ceil(cell.sizes[a] / rows)
        else:
            block[a] = next_pow2(cell.sizes[a]) if a in live_axes else 1
    return Plan(
        "persistent dense recurrence",
        (BATCH, *cell.axes),
        {**cell.sizes, BATCH: "B"},
        (lay.rows,),
        block,
        tiles,
        1,
        num_warps,
    )


def _names(step: Cell) -> tuple[list[str], list[str]]:
    """The step's per-token inputs (not the contractions ``mv:<k>``, which the kernel computes) and
    constants."""
    mv = {mv_name(m) for m in range(len(step.inputs))}
    return [n for n in step.inputs if n not in mv], list(step.consts)


def emit_forward(step: Cell, lay: DenseLayout, plan: Plan, name: str, n_mv: int, early: bool = True) -> str:
    """``early``: issue the step's per-token loads before the grid barrier (they do not depend on the
    other programs), so that their latency overlaps the wait."""
    g = step.graph
    order = _needed(g, [*step.next_state.values(), step.output])
    ins, consts = _names(step)
    states = list(step.states)
    opnd = sorted(set(lay.operand))
    k = _PKernel(plan, lay)
    p_w = [k.ns(("w", m), f"p_w{m}") for m in range(n_mv)]
    p_mv = [k.ns(("mv", m), f"p_mv{m}") for m in range(n_mv)]
    sig = [k.ptr("in", n) for n in ins] + [k.ptr("const", c) for c in consts] + p_w
    sig += [k.sptr("hs", s) for s in states] + [k.sptr("hv", s) for s in opnd] + p_mv
    p_y = k.ptr("out", "y")
    sig += [p_y, "p_sync"]
    k.header(f"{name}_persistent_fwd_kernel", sig)
    k.load_consts(step, _leaf_ids(g, order, Op.PARAM))
    for s in states:
        ax = step.states[s]
        k.w(f"{k.blk(s)} = {k.load_full(k.at(k.sptr('hs', s), ax, 't_lo', '(T + 1)'), ax)}")
    k.w("for i_t in range(0, t_hi - t_lo):")
    k.w("t = t_lo + i_t", 2)
    leaves = _leaf_ids(g, order, Op.INPUT)
    mv_leaves = {m: leaves[mv_name(m)] for m in range(n_mv) if mv_name(m) in leaves}
    token = [
        f"b{i} = {k.load_full(k.at(k.ptr('in', n), step.inputs[n], 't', 'T'), step.inputs[n])}"
        for n, i in leaves.items()
        if n in ins
    ]
    for line in token if early else []:
        k.w(line, 2)
    k.w("if PERSISTENT:", 2)
    k.w("if i_t > 0:", 3)
    k.w("_grid_wait(p_sync, NP * i_t)  # every row of the previous state is stored", 4)
    k.w("# the contractions: mv<k>[b, rows] = sum_q W<k>[rows, q] h[b, q] (all columns of h)", 2)
    k.matmul({m: (k.sptr("hv", lay.operand[m]), p_w[m]) for m in range(n_mv)}, "t", 2)
    for m, i in mv_leaves.items():
        k.w(f"b{i} = {k.to_layout(f'acc{m}')}", 2)
    for line in [] if early else token:
        k.w(line, 2)
    for s, i in _leaf_ids(g, order, Op.STATE).items():
        k.w(f"b{i} = {k.blk(s)}", 2)
    k.compute(g, order, 2)
    y_ax = step.output_axes
    k.w(
        f"tl.store({k.at(p_y, y_ax, 't', 'T')}, (b{step.output} + tl.zeros({k.full_shape(y_ax)}, "
        f"tl.float32)).to({p_y}.dtype.element_ty), mask={k.bmask(y_ax)})",
        2,
    )
    rows_ax = (lay.rows,)
    for m in range(n_mv):
        at = k.at(p_mv[m], rows_ax, "t", "T")
        k.w(f"tl.store({at}, {k.to_layout(f'acc{m}')}, mask={k.bmask(rows_ax)})", 2)
    for s in states:
        ax = step.states[s]
        k.w(f"{k.blk(s)} = tl.where({k.bmask(ax)}, b{step.next_state[s]}, 0.0)", 2)
        k.w(f"tl.store({k.at(k.sptr('hs', s), ax, 't + 1', '(T + 1)')}, {k.blk(s)}, mask={k.bmask(ax)})", 2)
    for s in opnd:
        ax, hv = step.states[s], k.sptr("hv", s)
        k.w(
            f"tl.store({k.at_tm(hv, ax, 't + 1')}, {k.blk(s)}.to({hv}.dtype.element_ty), mask={k.bmask(ax)})",
            2,
        )
    k.w("if PERSISTENT:", 2)
    k.w("_grid_arrive(p_sync)", 3)
    return "\n".join(k.lines)


def emit_backward(
    step: Cell, bwd: Backward, lay: DenseLayout, plan: Plan, name: str, n_mv: int, early: bool = True
) -> str:
    g = bwd.graph
    ins, consts = _names(step)
    states = list(step.states)
    mv_names = [mv_name(m) for m in range(n_mv)]
    outs = [*bwd.d_state.values(), *bwd.d_inputs.values(), *bwd.d_consts.values()]
    order = _needed(g, outs)
    k = _PKernel(plan, lay)
    p_w = [k.ns(("w", m), f"p_w{m}") for m in range(n_mv)]
    p_mv = [k.ns(("mv", m), f"p_mv{m}") for m in range(n_mv)]
    p_g = [k.ns(("g", m), f"p_g{m}") for m in range(n_mv)]
    p_dy = k.ptr("in", GRAD + "y")
    sig = [k.ptr("in", n) for n in ins] + [k.ptr("const", c) for c in consts] + p_w
    sig += [k.sptr("hs", s) for s in states] + p_mv + [p_dy]
    sig += [k.sptr("dh", s) for s in states] + p_g
    sig += [k.dptr("in", n) for n in ins] + [k.dptr("const", c) for c in consts] + ["p_sync"]
    k.header(f"{name}_persistent_bwd_kernel", sig)
    k.load_consts(step, _leaf_ids(g, order, Op.PARAM))
    for c in consts:
        k.w(f"{k.dblk('const', c)} = tl.zeros({k.shape(step.consts[c])}, tl.float32)")
    for s in states:
        ax = step.states[s]
        carried = k.load_full(k.at_b(k.sptr("dh", s), ax), ax)
        k.w(f"{k.dblk('state', s)} = {carried}  # carried cotangent of the state")
    k.w("for i_t in range(0, t_hi - t_lo):")
    k.w("t = t_hi - 1 - i_t", 2)
    # the step's own loads (previous state, mv, inputs, dy: written before this launch)
    rows_ax = (lay.rows,)
    token = []
    for n, i in _leaf_ids(g, order, Op.STATE).items():
        if not n.startswith(GRAD):
            ax = step.states[n]
            token.append(f"b{i} = {k.load_full(k.at(k.sptr('hs', n), ax, 't', '(T + 1)'), ax)}")
    for n, i in _leaf_ids(g, order, Op.INPUT).items():
        if n in mv_names:
            ax, ptr = rows_ax, p_mv[mv_names.index(n)]
        else:
            ax, ptr = (step.output_axes if n == GRAD + "y" else step.inputs[n]), k.ptr("in", n)
        token.append(f"b{i} = {k.load_full(k.at(ptr, ax, 't', 'T'), ax)}")
    for line in token if early else []:
        k.w(line, 2)
    k.w("if PERSISTENT:", 2)
    k.w("if i_t > 0:", 3)
    k.w("_grid_wait(p_sync, NP * i_t)  # every row of g at t + 1 is stored", 4)
    k.w("# the matrices' share of the state's cotangent: sum_i W<k>[i, rows] g<k>[b, t + 1, i]", 2)
    k.w("# (g at t = T is zero)", 2)
    k.matmul({m: (p_g[m], p_w[m]) for m in range(n_mv)}, "t + 1", 2)
    share: dict[str, list[int]] = {}
    for m, s in enumerate(lay.operand):
        share.setdefault(s, []).append(m)
    carried = {s: k.ns(("dnext", s), f"b_dn_{s}") for s in states}
    for s in states:
        extra = "".join(f" + {k.to_layout(f'acc{m}')}" for m in share.get(s, []))
        k.w(f"{carried[s]} = {k.dblk('state', s)}{extra}", 2)
    for n, i in _leaf_ids(g, order, Op.STATE).items():
        if n.startswith(GRAD):
            k.w(f"b{i} = {carried[n[len(GRAD) :]]}", 2)
    for line in [] if early else token:
        k.w(line, 2)
    k.compute(g, order, 2)
    for m, n in enumerate(mv_names):
        k.w(
            f"tl.store({k.at_tm(p_g[m], rows_ax, 't')}, (b{bwd.d_inputs[n]} + "
            f"tl.zeros({k.full_shape(rows_ax)}, tl.float32)).to({p_g[m]}.dtype.element_ty), "
            f"mask={k.bmask(rows_ax)})",
            2,
        )
    for n in ins:
        ax, p_dn = step.inputs[n], k.dptr("in", n)
        nt, idx = (1, "0") if lay.rows in ax else (plan.tiles[lay.rows], "i_r")
        k.w(
            f"tl.store({p_dn} + ((o__b * T + t) * {nt} + {idx}) * {k.numel(ax)} + {k.off(ax)}, "
            f"(b{bwd.d_inputs[n]} + tl.zeros({k.full_shape(ax)}, tl.float32)).to({p_dn}.dtype.element_ty), "
            f"mask={k.bmask(ax)})",
            2,
        )
    for c in consts:
        ax = step.consts[c]
        full = f"b{bwd.d_consts[c]} + tl.zeros({k.full_shape(ax)}, tl.float32)"
        k.w(f"{k.dblk('const', c)} += tl.sum(tl.where(m__b, {full}, 0.0), axis=0, keep_dims=True)", 2)
    for s in states:
        ax = step.states[s]
        k.w(f"{k.dblk('state', s)} = tl.where({k.bmask(ax)}, b{bwd.d_state[s]}, 0.0)", 2)
    k.w("if PERSISTENT:", 2)
    k.w("_grid_arrive(p_sync)", 3)
    for s in states:
        ax = step.states[s]
        k.w(f"tl.store({k.at_b(k.sptr('dh', s), ax)}, {k.dblk('state', s)}, mask={k.bmask(ax)})")
    for c in consts:
        ax = step.consts[c]
        ptr = f"{k.dptr('const', c)} + pid * {k.numel(ax)} + {k.off(ax)}"
        msk = k.mask(ax)
        if msk == "None":
            k.w(f"tl.store({ptr}, tl.load({ptr}) + {k.dblk('const', c)})")
        else:
            k.w(f"tl.store({ptr}, tl.load({ptr}, mask={msk}, other=0.0) + {k.dblk('const', c)}, mask={msk})")
    return "\n".join(k.lines)


def emit_module(
    layer: LayerIR, step: Cell, bwd: Backward, lay: DenseLayout, plan: Plan, n_mv: int, early: bool = True
) -> str:
    name = module_name(layer.name)
    spec = "\n".join("#   " + line for line in layer.source.splitlines())
    fwd_eqs = _equations(step.graph, {**{f"{s}'": i for s, i in step.next_state.items()}, "y": step.output})
    bwd_roots = {
        **{f"d{s}_prev": i for s, i in bwd.d_state.items()},
        **{f"d{n}": i for n, i in bwd.d_inputs.items()},
        **{f"d{c}": i for c, i in bwd.d_consts.items()},
    }
    settings = ", ".join(f"{k}={v}" for k, v in {**layer.hypers, **layer.choices}.items())
    mats = ", ".join(
        f"mv{m} = sum[{lay.contracted[m]}](W{m} * {lay.operand[m]}[{lay.contracted[m]}])" for m in range(n_mv)
    )
    header = [
        f"# Generated by archdsl from spec {layer.name!r} ({settings}). Do not edit.",
        f"# IR fingerprint {layer.fingerprint()}; persistent dense recurrence: rows '{lay.rows}' in tiles of "
        f"{plan.block[lay.rows]} ({plan.tiles[lay.rows]} programs per batch block), {plan.num_warps} warps",
        f"# Contractions run as tl.dot inside the kernels: {mats}",
        "#",
        "# Spec:",
        spec,
        "#",
        "# Step cell (mv<k> are the contractions, c* parameter-only values computed outside the kernel):",
        *("#   " + e for e in fwd_eqs),
        "#",
        "# Derived backward step (d:S is the cotangent of the new state, d:y of the readout):",
        *("#   " + e for e in _equations(bwd.graph, bwd_roots)),
    ]
    body = [
        "\n".join(header),
        "import triton",
        "import triton.language as tl",
        HELPERS + SYNC,
        emit_forward(step, lay, plan, name, n_mv, early),
        "",
        emit_backward(step, bwd, lay, plan, name, n_mv, early),
        "",
        f"fwd_kernel = {name}_persistent_fwd_kernel",
        f"bwd_kernel = {name}_persistent_bwd_kernel",
        "",
    ]
    return "\n\n".join(body)


# ---- run time --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PersistentPlan:
    rows_axis: str
    rows: int  # state rows per program
    tiles: int  # programs per batch block
    num_warps: int
    block_k: int
    size: int  # the rows' axis size

    def blocks(self, batch: int) -> tuple[int, int, int]:
        """(batch rows per program, columns per tl.dot, programs) at this batch size: a wider batch
        block takes a narrower k block (the register blocks stay the same size)."""
        bb = max(DOT_MIN, min(MAX_BLOCK_B, next_pow2(batch)))
        block_k = max(DOT_MIN, min(self.block_k, 8192 // bb, next_pow2(self.size)))
        return bb, block_k, self.tiles * math.ceil(batch / bb)

    def programs(self, batch: int) -> int:
        return self.blocks(batch)[2]

    def describe(self, states: dict) -> dict:
        return {
            "strategy": "persistent dense recurrence",
            "split_axes": [self.rows_axis],
            "blocks": {self.rows_axis: self.rows, "batch": f"<= {MAX_BLOCK_B}", "k": f"<= {self.block_k}"},
            "grid": f"({self.tiles} x batch blocks of up to {MAX_BLOCK_B},)",
            "programs": self.tiles,
            "rows_per_program": self.rows,
            "state_bytes_per_program": 4 * MAX_BLOCK_B * self.rows * len(states),
            "checkpoint_stride": 1,
            "num_warps": self.num_warps,
        }


_DOT_T = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


class PersistentCell:
    """``(inputs, frontier, state0) -> (y, final states)``: one persistent launch per direction."""

    strategy = "persistent"

    def describe(self) -> list[tuple[str, str]]:
        p = self.plan
        return [
            (
                "grid",
                f"{p.tiles} programs per batch block, each {p.rows} rows of axis {p.rows_axis}; "
                f"blocks {p.describe(self.cell.states)['blocks']}",
            ),
            ("launches", "one per direction while the grid fits the GPU's SMs, else one per step"),
            ("backward", "every state and contraction stored; each matrix's gradient one GEMM"),
            ("warps", str(p.num_warps)),
        ]

    def __init__(
        self,
        layer: LayerIR,
        cell: Cell,
        matvecs: list[MatVec],
        lay: DenseLayout,
        rows=None,
        warps=None,
        block_k=128,
        early=True,
    ):
        self.cell, self.matvecs, self.lay = cell, matvecs, lay
        self.step = step_cell(cell, matvecs)
        self.bwd = derive_backward(self.step)
        D = cell.sizes[lay.rows]
        if rows is None:  # the smallest tile that keeps the grid within MAX_TILES programs
            rows = DOT_MIN
            while math.ceil(D / rows) > MAX_TILES:
                rows *= 2
        rows = max(DOT_MIN, next_pow2(rows))
        rows = min(rows, max(DOT_MIN, next_pow2(D)))
        warps = warps or 8
        kplan = make_dense_plan(cell, self.step, lay, rows, warps)
        self.kplan = kplan
        self.plan = PersistentPlan(lay.rows, rows, kplan.tiles[lay.rows], warps, block_k, D)
        from archdsl.codegen.run.runtime import load_module

        source = emit_module(layer, self.step, self.bwd, lay, kplan, len(matvecs), early)
        self.kernels, self.hash, self.path = load_module(source, module_name(layer.name) + "_persistent")
        self.input_names, self.const_names = _names(self.step)
        self.state_names = list(cell.states)
        self.operands = sorted(set(lay.operand))
        self.key = f"{self.hash}_{rows}_{warps}_{block_k}"  # the custom op's name (one per key)

    # ---- the public call ------------------------------------------------------------------------
    def __call__(self, inputs, frontier, state0=None):
        cell = self.cell
        xs = [inputs[n].contiguous() for n in self.input_names]
        dt = xs[0].dtype
        cs = [frontier[self.step.const_source[c]].contiguous() for c in self.const_names]
        ws = []
        for m, rm in zip(self.matvecs, self.lay.row_major):
            w = frontier[cell.const_source[m.const]]
            ws.append((w if rm else w.t()).to(dt).contiguous())  # [rows, contracted]
        B = xs[0].shape[0]
        h0 = []
        for s in self.state_names:
            v = (state0 or {}).get(s)
            shape = (B, *(cell.sizes[a] for a in cell.states[s]))
            h0.append(v.float().contiguous() if v is not None else torch.zeros(shape, device=xs[0].device))
        outs = self.op(xs, cs, ws, h0)
        y, finals = outs[0], outs[1 : 1 + len(h0)]
        return y, dict(zip(self.state_names, finals))

    @functools.cached_property
    def op(self):
        return _register_op(self)

    @property
    def last_sync(self) -> list[torch.Tensor]:
        """The barrier counters of the last persistent launches (empty after stepped launches)."""
        return _SYNC.get(self.key, [])

    def check_barriers(self) -> None:
        """Raise if a grid barrier of the last launches gave up waiting (programs not co-resident)."""
        for s in self.last_sync:
            if int(s[1].item()) != 0:
                raise RuntimeError("a persistent kernel's grid barrier timed out (programs not co-resident)")

    # ---- launchers ----------------------------------------------------------------------------
    def _launch(self, kernel, args, B, T, reverse: bool):
        dev = args[0].device
        bb, block_k, n_prog = self.plan.blocks(B)
        # operands in the input dtype, fp32 accumulation; fp32 operands exactly (no TF32). The CPU
        # interpreter multiplies bf16 blocks wrongly, so there they are widened first (exactly).
        dot_t = _DOT_T.get(args[0].dtype, tl.float32)
        if _interpreting() or dev.type != "cuda":
            dot_t = tl.float32
        dot_prec = "ieee" if dot_t == tl.float32 else "tf32"
        # all programs resident at once (one per SM at most), or a single program (no barrier needed)
        on_gpu = dev.type == "cuda" and not _interpreting()
        persistent = n_prog == 1 or (on_gpu and n_prog <= _sm_count(dev.index or 0))
        persistent = persistent and os.environ.get("ARCHDSL_PERSISTENT", "1") != "0"
        opts = dict(
            BLOCK_B=bb, BLOCK_K=block_k, DOT_T=dot_t, DOT_PREC=dot_prec, num_warps=self.plan.num_warps
        )
        if persistent:
            sync = torch.zeros(2, dtype=torch.int32, device=dev)
            _SYNC[self.key] = [*(_SYNC.get(self.key, []) if reverse else []), sync]
            kernel[(n_prog,)](*args, sync, B, T, 0, T, PERSISTENT=True, **opts)
            if on_gpu:  # a barrier that gave up means wrong numbers: fail loudly, without a host sync
                torch._assert_async(sync[1] == 0, "archdsl: a persistent kernel's grid barrier timed out")
            return
        sync = torch.zeros(2, dtype=torch.int32, device=dev)
        steps = range(T - 1, -1, -1) if reverse else range(T)
        _SYNC[self.key] = []
        for t in steps:  # one step per launch: the launch boundary is the barrier
            kernel[(n_prog,)](*args, sync, B, T, t, t + 1, PERSISTENT=False, **opts)

    def forward(self, xs, cs, ws, h0):
        cell = self.cell
        B, T = xs[0].shape[:2]
        dev, dt = xs[0].device, xs[0].dtype
        D = cell.sizes[self.lay.rows]
        hs = []
        for v in h0:
            buf = torch.empty(B, T + 1, *v.shape[1:], device=dev)
            buf[:, 0] = v
            hs.append(buf)
        hv = []  # the contractions' operands, time-major [T + 1, B, D], in the input dtype
        for s in self.operands:
            buf = torch.empty(T + 1, B, D, device=dev, dtype=dt)
            buf[0] = h0[self.state_names.index(s)]
            hv.append(buf)
        mv = [torch.empty(B, T, D, device=dev) for _ in ws]
        y = torch.empty(B, T, *(cell.sizes[a] for a in cell.output_axes), device=dev, dtype=dt)
        wf = [w.t().contiguous() for w in ws]  # [contracted, rows]: a program reads its rows' columns
        self._launch(self.kernels.fwd_kernel, [*xs, *cs, *wf, *hs, *hv, *mv, y], B, T, reverse=False)
        finals = [h[:, T].clone() for h in hs]
        return y, finals, hs, hv, mv

    def backward(self, xs, cs, ws, hs, hv, mv, dy, dht):
        cell = self.cell
        B, T = xs[0].shape[:2]
        dev, dt = xs[0].device, xs[0].dtype
        D = cell.sizes[self.lay.rows]
        dh = [d.float().contiguous().clone() for d in dht]
        g = [torch.empty(T + 1, B, D, device=dev, dtype=dt) for _ in ws]  # cotangents of mv, time-major
        for x in g:
            x[T] = 0
        dxs = []  # in the input dtype; fp32 partials per tile where an input lacks the rows' axis
        for n, x in zip(self.input_names, xs):
            tiled = self.lay.rows not in self.step.inputs[n]
            shape = (B, T, self.plan.tiles, *x.shape[2:]) if tiled else x.shape
            dxs.append(torch.empty(shape, device=dev, dtype=torch.float32 if tiled else x.dtype))
        n_prog = self.plan.programs(B)
        dcs = [torch.zeros(n_prog, *c.shape, device=dev) for c in cs]
        args = [*xs, *cs, *ws, *hs, *mv, dy.contiguous(), *dh, *g, *dxs, *dcs]
        self._launch(self.kernels.bwd_kernel, args, B, T, reverse=True)
        dxs = [d.sum(2).to(x.dtype) if d.dim() > x.dim() else d for d, x in zip(dxs, xs)]
        dcs = [d.sum(0).to(c.dtype) for d, c in zip(dcs, cs)]
        # each matrix's gradient: one GEMM over every (step, batch): sum g[t, b, i] h[t - 1, b, q]
        dws, dh0 = [], list(dh)
        for m, (w, gm) in enumerate(zip(ws, g)):
            s = self.lay.operand[m]
            hprev = hv[self.operands.index(s)][:T].reshape(T * B, D)
            dws.append((gm[:T].reshape(T * B, D).t() @ hprev).to(w.dtype))
            k = self.state_names.index(s)
            dh0[k] = dh0[k] + gm[0].float() @ w.float()
        return dxs, dcs, dws, dh0


_OPS: dict[str, object] = {}
_SYNC: dict[str, list[torch.Tensor]] = {}  # op key -> barrier counters of its last launches


def _register_op(pc: PersistentCell):
    """One op per key (source hash and launch settings): cells with the same key share it."""
    name = f"archdsl::pcell_{pc.key}"
    if name not in _OPS:
        _OPS[name] = _make_op(pc, name)
    return _OPS[name]


def _make_op(pc: PersistentCell, name: str):
    """``(xs, cs, ws, h0) -> [y, *finals, *state history, *operand history, *mv]`` with its backward as
    a second custom op (torch.compile keeps each as one node)."""
    cell = pc.cell
    n_s, n_v, n_m = len(pc.state_names), len(pc.operands), len(pc.matvecs)
    D = cell.sizes[pc.lay.rows]

    @torch.library.custom_op(name, mutates_args=())
    def op(
        xs: list[torch.Tensor], cs: list[torch.Tensor], ws: list[torch.Tensor], h0: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        y, finals, hs, hv, mv = pc.forward(xs, cs, ws, h0)
        return [y, *finals, *hs, *hv, *mv]

    @op.register_fake
    def _(xs, cs, ws, h0):
        B, T = xs[0].shape[:2]
        x = xs[0]
        y = x.new_empty(B, T, *(cell.sizes[a] for a in cell.output_axes))
        finals = [h.new_empty(h.shape) for h in h0]
        hs = [h.new_empty(B, T + 1, *h.shape[1:]) for h in h0]
        hv = [x.new_empty(T + 1, B, D) for _ in range(n_v)]
        mv = [x.new_empty(B, T, D, dtype=torch.float32) for _ in range(n_m)]
        return [y, *finals, *hs, *hv, *mv]

    def setup_context(ctx, inputs, output):
        xs, cs, ws, _ = inputs
        ctx.n = (len(xs), len(cs), len(ws))
        ctx.save_for_backward(*xs, *cs, *ws, *output[1 + n_s :])

    def backward(ctx, grads):
        n_x, n_c, n_w = ctx.n
        saved = list(ctx.saved_tensors)
        xs, cs, ws = saved[:n_x], saved[n_x : n_x + n_c], saved[n_x + n_c : n_x + n_c + n_w]
        rest = saved[n_x + n_c + n_w :]
        hs, hv, mv = rest[:n_s], rest[n_s : n_s + n_v], rest[n_s + n_v :]
        dy, dht = grads[0], list(grads[1 : 1 + n_s])
        if dy is None:
            dy = xs[0].new_zeros(*xs[0].shape[:2], *(cell.sizes[a] for a in cell.output_axes))
        dht = [d if d is not None else torch.zeros_like(h[:, 0]) for d, h in zip(dht, hs)]
        out = bwd_op(xs, cs, ws, hs, hv, mv, dy, dht)
        return out[:n_x], out[n_x : n_x + n_c], out[n_x + n_c : n_x + n_c + n_w], out[n_x + n_c + n_w :]

    @torch.library.custom_op(name + "_bwd", mutates_args=())
    def bwd_op(
        xs: list[torch.Tensor],
        cs: list[torch.Tensor],
        ws: list[torch.Tensor],
        hs: list[torch.Tensor],
        hv: list[torch.Tensor],
        mv: list[torch.Tensor],
        dy: torch.Tensor,
        dht: list[torch.Tensor],
    ) -> list[torch.Tensor]:
        dxs, dcs, dws, dh0 = pc.backward(xs, cs, ws, hs, hv, mv, dy, dht)
        return [*dxs, *dcs, *dws, *dh0]

    @bwd_op.register_fake
    def _(xs, cs, ws, hs, hv, mv, dy, dht):
        return [
            *(torch.empty_like(x) for x in xs),
            *(torch.empty_like(c) for c in cs),
            *(torch.empty_like(w) for w in ws),
            *(torch.empty_like(d, dtype=torch.float32) for d in dht),
        ]

    op.register_autograd(backward, setup_context=setup_context)
    return op


def build_persistent(
    layer: LayerIR, cell: Cell, matvecs: list[MatVec], rows=None, warps=None, block_k=128, early=True
):
    """A ``PersistentCell`` when the layout applies, else None (the caller falls back).

    ``rows``: state rows per program (a power of two >= 16; default: the smallest that needs at most
    ``MAX_TILES`` programs per batch block); ``warps`` per program (default 8); ``block_k``: columns
    per ``tl.dot`` in the contraction loop (at most; narrower for batch blocks over 64); ``early``:
    issue each step's own loads before the grid barrier rather than after it."""
    lay = dense_layout(cell, matvecs, step_cell(cell, matvecs))
    if lay is None:
        return None
    return PersistentCell(layer, cell, matvecs, lay, rows, warps, block_k, early)


__all__ = ["DenseLayout", "PersistentCell", "build_persistent", "dense_layout", "pointwise_axes"]
