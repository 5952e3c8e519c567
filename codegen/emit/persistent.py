"""Triton source of the persistent dense recurrence: one forward and one backward kernel over the
whole sequence (the runtime and the grid barrier's protocol: ``codegen/run/persistent.py``).

The grid has one program per tile of ``R`` state rows (times batch blocks). Each step a program
reads the previous state of every row (all columns, from a time-major history buffer in the input
dtype, through L2), multiplies it by its ``R`` rows of each matrix with ``tl.dot`` (fp32
accumulation), runs the rest of the step (the step cell of ``codegen/analysis.py``) on its tile with
the same per-op Triton rules as the fused loop, stores its rows of the new state and arrives at a
grid barrier that every program waits on before the next step reads the state.

The backward walks time in reverse with the same barrier: the cotangent of a program's rows of the
state is its own carried share plus ``sum_i W[i, R] g_{t+1}[b, i]`` (``g`` the cotangent of each
``mv``, written by every program in the previous iteration); the derived backward of the step cell
then gives ``g_t``, the carried share and the per-token and parameter gradients of the tile.

Both kernels take the step range ``[t_lo, t_hi)`` at run time and a ``PERSISTENT`` flag: without it
they skip the barrier (one step per launch, the launch boundary is the barrier). Text only: no torch.
"""

from __future__ import annotations

import math

from archdsl.codegen.analysis import DenseLayout, mv_name, step_inputs
from archdsl.codegen.emit.format import format_source
from archdsl.codegen.emit.names import module_name
from archdsl.codegen.emit.persistent_api import LAUNCHERS, MODULE_WORDS, constants, functions
from archdsl.codegen.emit.prelude import header
from archdsl.codegen.emit.signature import PyNames
from archdsl.codegen.emit.triton import HELPERS, _Kernel, _leaf_ids, _needed, _row_major
from archdsl.codegen.plan import BATCH, Plan

from archdsl.autodiff import GRAD, Backward, Cell
from archdsl.ir import LayerIR, Op

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

    def at_tm(self, ptr: str, axes, t: str) -> str:
        """Pointer block of a time-major tensor ``[steps, B, *axes]`` at step ``t``."""
        return f"{ptr} + (({t}) * B + o__b) * {self.numel(axes)} + {self.off(axes)}"

    def load_full(self, ptr: str, axes, extra: str = "") -> str:
        return f"tl.load({ptr}, mask={self.bmask(axes)}, other=0.0{extra}).to(tl.float32)"

    def store_full(self, at: str, value: str, ptr: str, axes, indent: int) -> None:
        """Store ``value`` broadcast to the full block of ``axes``, in the element type of ``ptr``."""
        self.w(
            f"tl.store({at}, ({value} + tl.zeros({self.full_shape(axes)}, tl.float32))"
            f".to({ptr}.dtype.element_ty), mask={self.bmask(axes)})",
            indent,
        )

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
        consts = ("BLOCK_B", "BLOCK_K", "DOT_T", "DOT_PREC", "PERSISTENT")
        params = [*sig, "B", "T", "t_lo", "t_hi", *(f"{c}: tl.constexpr" for c in consts)]
        self.lines += ["@triton.jit", f"def {name}({', '.join(params)}):"]  # the formatter wraps it
        self.prologue()

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


def _matrix_args(k: _PKernel, n_mv: int, *roles: str) -> list[list[str]]:
    """Per role (``w`` matrices, ``mv`` contractions, ``g`` their cotangents), one pointer per matvec."""
    return [[k.ns((role, m), f"p_{role}{m}") for m in range(n_mv)] for role in roles]


def emit_forward(step: Cell, lay: DenseLayout, plan: Plan, name: str, n_mv: int, early: bool = True) -> str:
    """``early``: issue the step's per-token loads before the grid barrier (they do not depend on the
    other programs), so that their latency overlaps the wait."""
    g = step.graph
    order = _needed(g, [*step.next_state.values(), step.output])
    ins, consts = step_inputs(step)
    k = _PKernel(plan, lay)
    p_w, p_mv = _matrix_args(k, n_mv, "w", "mv")
    sig = [k.ptr("in", n) for n in ins] + [k.ptr("const", c) for c in consts] + p_w
    sig += [k.sptr("hs", s) for s in step.states] + [k.sptr("hv", s) for s in sorted(set(lay.operand))]
    sig += [*p_mv, k.ptr("out", "y"), "p_sync"]
    k.header(f"{name}_persistent_fwd_kernel", sig)
    k.load_consts(step, _leaf_ids(g, order, Op.PARAM))
    for s, ax in step.states.items():
        k.w(f"{k.blk(s)} = {k.load_full(k.at(k.sptr('hs', s), ax, 't_lo', '(T + 1)'), ax)}")
    k.w("for i_t in range(0, t_hi - t_lo):")
    k.w("t = t_lo + i_t", 2)
    leaves = _leaf_ids(g, order, Op.INPUT)
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
    for m in range(n_mv):
        if mv_name(m) in leaves:
            k.w(f"b{leaves[mv_name(m)]} = {k.to_layout(f'acc{m}')}", 2)
    for line in [] if early else token:
        k.w(line, 2)
    for s, i in _leaf_ids(g, order, Op.STATE).items():
        k.w(f"b{i} = {k.blk(s)}", 2)
    k.compute(g, order, 2)
    _forward_stores(k, step, lay, p_mv)
    return "\n".join(k.lines)


def _forward_stores(k: _PKernel, step: Cell, lay: DenseLayout, p_mv: list[str]) -> None:
    """The step's readout, contractions, new states and the operands' time-major history, then the
    arrival at the barrier."""
    y_ax, p_y = step.output_axes, k.ptr("out", "y")
    k.store_full(k.at(p_y, y_ax, "t", "T"), f"b{step.output}", p_y, y_ax, 2)
    rows_ax = (lay.rows,)
    for m, p in enumerate(p_mv):
        k.w(f"tl.store({k.at(p, rows_ax, 't', 'T')}, {k.to_layout(f'acc{m}')}, mask={k.bmask(rows_ax)})", 2)
    for s, ax in step.states.items():
        k.w(f"{k.blk(s)} = tl.where({k.bmask(ax)}, b{step.next_state[s]}, 0.0)", 2)
        k.w(f"tl.store({k.at(k.sptr('hs', s), ax, 't + 1', '(T + 1)')}, {k.blk(s)}, mask={k.bmask(ax)})", 2)
    for s in sorted(set(lay.operand)):
        ax, hv = step.states[s], k.sptr("hv", s)
        k.w(
            f"tl.store({k.at_tm(hv, ax, 't + 1')}, {k.blk(s)}.to({hv}.dtype.element_ty), mask={k.bmask(ax)})",
            2,
        )
    k.w("if PERSISTENT:", 2)
    k.w("_grid_arrive(p_sync)", 3)


def emit_backward(
    step: Cell, bwd: Backward, lay: DenseLayout, plan: Plan, name: str, n_mv: int, early: bool = True
) -> str:
    g = bwd.graph
    ins, consts = step_inputs(step)
    outs = [*bwd.d_state.values(), *bwd.d_inputs.values(), *bwd.d_consts.values()]
    order = _needed(g, outs)
    k = _PKernel(plan, lay)
    p_w, p_mv, p_g = _matrix_args(k, n_mv, "w", "mv", "g")
    p_dy = k.ptr("in", GRAD + "y")
    sig = [k.ptr("in", n) for n in ins] + [k.ptr("const", c) for c in consts] + p_w
    sig += [k.sptr("hs", s) for s in step.states] + p_mv + [p_dy]
    sig += [k.sptr("dh", s) for s in step.states] + p_g
    sig += [k.dptr("in", n) for n in ins] + [k.dptr("const", c) for c in consts] + ["p_sync"]
    k.header(f"{name}_persistent_bwd_kernel", sig)
    k.load_consts(step, _leaf_ids(g, order, Op.PARAM))
    for c in consts:
        k.w(f"{k.dblk('const', c)} = tl.zeros({k.shape(step.consts[c])}, tl.float32)")
    for s, ax in step.states.items():
        carried = k.load_full(k.at_b(k.sptr("dh", s), ax), ax)
        k.w(f"{k.dblk('state', s)} = {carried}  # carried cotangent of the state")
    k.w("for i_t in range(0, t_hi - t_lo):")
    k.w("t = t_hi - 1 - i_t", 2)
    token = _backward_loads(k, step, g, order, p_mv)
    for line in token if early else []:
        k.w(line, 2)
    k.w("if PERSISTENT:", 2)
    k.w("if i_t > 0:", 3)
    k.w("_grid_wait(p_sync, NP * i_t)  # every row of g at t + 1 is stored", 4)
    k.w("# the matrices' share of the state's cotangent: sum_i W<k>[i, rows] g<k>[b, t + 1, i]", 2)
    k.w("# (g at t = T is zero)", 2)
    k.matmul({m: (p_g[m], p_w[m]) for m in range(n_mv)}, "t + 1", 2)
    _carried_cotangents(k, step, g, order, lay)
    for line in [] if early else token:
        k.w(line, 2)
    k.compute(g, order, 2)
    _backward_stores(k, step, bwd, plan, p_g)
    _backward_epilogue(k, step)
    return "\n".join(k.lines)


def _backward_loads(k: _PKernel, step: Cell, g, order, p_mv: list[str]) -> list[str]:
    """The step's own loads (previous state, mv, inputs, dy: written before this launch)."""
    mv_names = [mv_name(m) for m in range(len(p_mv))]
    token = []
    for n, i in _leaf_ids(g, order, Op.STATE).items():
        if not n.startswith(GRAD):
            ax = step.states[n]
            token.append(f"b{i} = {k.load_full(k.at(k.sptr('hs', n), ax, 't', '(T + 1)'), ax)}")
    for n, i in _leaf_ids(g, order, Op.INPUT).items():
        if n in mv_names:
            ax, ptr = (k.lay.rows,), p_mv[mv_names.index(n)]
        else:
            ax, ptr = (step.output_axes if n == GRAD + "y" else step.inputs[n]), k.ptr("in", n)
        token.append(f"b{i} = {k.load_full(k.at(ptr, ax, 't', 'T'), ax)}")
    return token


def _carried_cotangents(k: _PKernel, step: Cell, g, order, lay: DenseLayout) -> None:
    """Each state's cotangent: its carried share plus the matrices' shares (``acc<k>``)."""
    share: dict[str, list[int]] = {}
    for m, s in enumerate(lay.operand):
        share.setdefault(s, []).append(m)
    carried = {s: k.ns(("dnext", s), f"b_dn_{s}") for s in step.states}
    for s in step.states:
        extra = "".join(f" + {k.to_layout(f'acc{m}')}" for m in share.get(s, []))
        k.w(f"{carried[s]} = {k.dblk('state', s)}{extra}", 2)
    for n, i in _leaf_ids(g, order, Op.STATE).items():
        if n.startswith(GRAD):
            k.w(f"b{i} = {carried[n[len(GRAD) :]]}", 2)


def _backward_stores(k: _PKernel, step: Cell, bwd: Backward, plan: Plan, p_g: list[str]) -> None:
    """The step's cotangents of the contractions (time-major), of the per-token inputs (per tile where
    an input lacks the rows' axis) and the parameters' sums, then the arrival at the barrier."""
    lay, rows_ax = k.lay, (k.lay.rows,)
    for m, p in enumerate(p_g):
        k.store_full(k.at_tm(p, rows_ax, "t"), f"b{bwd.d_inputs[mv_name(m)]}", p, rows_ax, 2)
    for n in step_inputs(step)[0]:
        ax, p_dn = step.inputs[n], k.dptr("in", n)
        nt, idx = (1, "0") if lay.rows in ax else (plan.tiles[lay.rows], "i_r")
        at = f"{p_dn} + ((o__b * T + t) * {nt} + {idx}) * {k.numel(ax)} + {k.off(ax)}"
        k.store_full(at, f"b{bwd.d_inputs[n]}", p_dn, ax, 2)
    for c, ax in step.consts.items():
        full = f"b{bwd.d_consts[c]} + tl.zeros({k.full_shape(ax)}, tl.float32)"
        k.w(f"{k.dblk('const', c)} += tl.sum(tl.where(m__b, {full}, 0.0), axis=0, keep_dims=True)", 2)
    for s, ax in step.states.items():
        k.w(f"{k.dblk('state', s)} = tl.where({k.bmask(ax)}, b{bwd.d_state[s]}, 0.0)", 2)
    k.w("if PERSISTENT:", 2)
    k.w("_grid_arrive(p_sync)", 3)


def _backward_epilogue(k: _PKernel, step: Cell) -> None:
    """After the last step: the initial state's cotangent, and the program's share of each
    parameter's gradient (one row per program, summed after the launch)."""
    for s, ax in step.states.items():
        k.w(f"tl.store({k.at_b(k.sptr('dh', s), ax)}, {k.dblk('state', s)}, mask={k.bmask(ax)})")
    for c, ax in step.consts.items():
        ptr = f"{k.dptr('const', c)} + pid * {k.numel(ax)} + {k.off(ax)}"
        msk = k.mask(ax)
        if msk == "None":
            k.w(f"tl.store({ptr}, tl.load({ptr}) + {k.dblk('const', c)})")
        else:
            k.w(f"tl.store({ptr}, tl.load({ptr}, mask={msk}, other=0.0) + {k.dblk('const', c)}, mask={msk})")


def emit_module(
    layer: LayerIR,
    cell: Cell,
    step: Cell,
    bwd: Backward,
    lay: DenseLayout,
    plan: Plan,
    matrices: list[str],
    block_k: int = 128,
    early: bool = True,
) -> str:
    """The generated module, formatted: the header, the helpers and the grid barrier, the two kernels,
    their launchers, the ``torch.autograd.Function`` and the public function (``persistent_api.py``).
    ``cell``: the whole cell, whose step cell ``step`` is; ``matrices``: each contraction's constant
    (of ``cell``); ``block_k``: the widest k block of a ``tl.dot``."""
    name, n_mv = module_name(layer.name), len(matrices)
    words = [name, f"{name}_persistent_fwd", f"{name}_persistent_bwd", *MODULE_WORDS]
    words += [f"{name}_persistent_{d}_kernel" for d in ("fwd", "bwd")]
    words.append("".join(w.capitalize() for w in name.split("_")) + "PersistentFunction")
    py = PyNames(cell.axes, words)
    runtime = constants(cell, step, lay, plan.tiles[lay.rows], block_k, plan.num_warps, py)
    mats = ", ".join(
        f"mv{m} = sum[{lay.contracted[m]}](W{m} * {lay.operand[m]}[{lay.contracted[m]}])" for m in range(n_mv)
    )
    plan_line = (
        f"persistent dense recurrence: rows '{lay.rows}' in tiles of {plan.block[lay.rows]} "
        f"({plan.tiles[lay.rows]} programs per batch block), {plan.num_warps} warps"
    )
    top = header(
        layer,
        step,
        bwd,
        plan_line,
        "Step cell (mv<k> are the contractions, c* parameter-only values computed outside the kernel)",
        [f"# Contractions run as tl.dot inside the kernels: {mats}"],
    )
    body = [
        top,
        "import functools\nimport os\n\nimport torch\nimport triton\nimport triton.language as tl",
        runtime,
        HELPERS + SYNC,
        emit_forward(step, lay, plan, name, n_mv, early),
        emit_backward(step, bwd, lay, plan, name, n_mv, early),
        f"fwd_kernel = {name}_persistent_fwd_kernel\nbwd_kernel = {name}_persistent_bwd_kernel",
        LAUNCHERS.strip("\n").replace("{name}", name),
        *functions(cell, step, lay, matrices, name, py),
        "",
    ]
    return format_source("\n\n\n".join(body), layer.name)
