"""The fused sequential loop's forward kernel and launcher, and what its backward shares with it.

The forward kernel holds a program's slice of each state in registers for the whole sequence, stores
a checkpoint every ``CHUNK`` steps and the final state; with a checkpoint at every step (``chunk=1``)
it keeps each step's state and the values the backward reads back instead, laid out as each program's
registers, and the backward (``fused_backward.py``) recomputes nothing. Each kernel's ``Signature``
writes both its ``def`` line and its launcher's launch.
"""

from __future__ import annotations

import math

from archdsl.codegen.emit.signature import PyNames, Signature, call
from archdsl.codegen.emit.triton import LEAVES, _Kernel, _leaf_ids, _needed, const_labels, spec_names
from archdsl.codegen.plan import Plan

from archdsl.autodiff import Backward, Cell
from archdsl.ir import Graph, Kind, Op

#: steps whose per-token values are in flight while a step computes (E88_d12h32 on an H100: two
#: ran 2-4% slower than one, the extra registers costing more than the longer lead saved)
AHEAD = 1
#: at ``chunk=1``: does the forward keep the stashed values (E88's ``delta``) as well as the states?
#: If not, the backward recomputes them from the kept states, off its chain of carried cotangents:
#: E88_d12h32 1.249 -> 1.348 ms, E88_h8n64 2.362 -> 2.556, E88_h32n16 1.053 -> 0.996, E75h4n32
#: 0.981 -> 1.221 (forward+backward, H200, round 24 call 2; streaming stores changed nothing there)
KEEP_STASH = True


def keeps_history(plan: Plan) -> bool:
    """A checkpoint at every step: the forward keeps each step's state and stashed values, and the
    backward walks the sequence once without recomputing it (B x T states of memory, no recompute)."""
    return plan.chunk == 1


def kept_values(cell: Cell, bwd: Backward, plan: Plan) -> list[int]:
    """The stashed values with buffers of their own (``stash_nodes``) that the forward keeps for the
    backward: with ``chunk=1`` only."""
    if not (keeps_history(plan) and KEEP_STASH):
        return []
    return [i for i, s in stash_nodes(cell, bwd).items() if s is None]


def saved_names(cell: Cell, bwd: Backward, plan: Plan, py: PyNames) -> list[str]:
    """The Python names of what the forward returns for the backward after ``y`` and the final
    states: each state's checkpoints, then the kept values."""
    names = [py(("ck", s), state_word(cell, "ck", s)) for s in cell.states]
    return names + [py(("kept", i), f"kept_{cell.names.get(i, i)}") for i in kept_values(cell, bwd, plan)]


def state_word(cell: Cell, role: str, s: str) -> str:
    """A state buffer's Python name: ``h0``/``ht`` for a layer's one state, ``h0_S`` for several."""
    return role if len(cell.states) == 1 else f"{role}_{s}"


def tidy_kernel(cell: Cell, g: Graph, plan: Plan, py: PyNames, names: dict) -> _Kernel:
    k = _Kernel(plan, names, py.size)
    k.labels = const_labels(cell.graph, cell.names)
    return k


def _token_loads(k: _Kernel, g: Graph, order) -> list[tuple[int, str, tuple]]:
    """(node, pointer at time ``{t}``, axes) of every per-token tensor the step reads (the cell's
    inputs, and in a backward the cotangents ``d:…`` of its outputs)."""
    out = []
    for n, i in _leaf_ids(g, order, Op.INPUT).items():
        ax = g[i].axes
        out.append((i, f"{k.ptr('in', n)} + (i_b * T + {{t}}) * {k.numel(ax)}", ax))
    return out


def _prefetch_first(k: _Kernel, loads, step, valid, indent: int) -> None:
    """Load the first ``AHEAD`` steps' per-token tensors before the loop: ``step(d)`` is the time of
    the ``d``-th step after the first, ``valid(d)`` whether the segment has it."""
    for d in range(AHEAD):
        for i, ptr, ax in loads:
            k.w(f"{k.nxt(i, d)} = {k.load(ptr.format(t=step(d)), ax, valid(d) if d else None)}", indent)


def _prefetch_next(k: _Kernel, loads, step, valid, indent: int) -> None:
    """Take this step's tensors and issue the loads of the step ``AHEAD`` steps on, which then
    overlap the math of the steps in between (one step's math can be shorter than a load)."""
    for i, ptr, ax in loads:
        k.w(f"{k.val(i)} = {k.nxt(i)}", indent)
        for d in range(1, AHEAD):
            k.w(f"{k.nxt(i, d - 1)} = {k.nxt(i, d)}", indent)
        k.w(f"{k.nxt(i, AHEAD - 1)} = {k.load(ptr.format(t=step(AHEAD)), ax, valid(AHEAD))}", indent)


def _rebase(k: _Kernel, ptrs) -> None:
    """Each tensor's pointer moved to this program's elements (``(pointer, axes)``, or ``(pointer,
    axes, True)`` for a block of scratch laid out as the padded registers)."""
    k.w("# each tensor's pointers at this program's elements")
    for p, ax, *local in ptrs:
        k.w(f"{p} += {k.local_offset(ax) if local else k.offset(ax)}")


def _common(k: _Kernel, cell: Cell, py: PyNames, sig: Signature) -> None:
    """The per-token inputs and the constants: the first parameters of every loop kernel."""
    for n in cell.inputs:
        sig.arg(k.ptr("in", n), py(("t", n), n))
    for c in cell.consts:
        sig.arg(k.ptr("const", c), py(("c", c), k.label(c)))


def _sizes(sig: Signature, py: PyNames, axes) -> None:
    sig.arg("T", "T")
    for a in axes:
        sig.constexpr(py.size[a], py.size[a])
    sig.constexpr("CHUNK", "chunk")


def emit_forward(
    cell: Cell, bwd: Backward, plan: Plan, name: str, py: PyNames, y_name: str = "y"
) -> tuple[list, list]:
    """(the forward kernel's lines, its launcher's lines)."""
    g, states, history = cell.graph, list(cell.states), keeps_history(plan)
    kept = kept_values(cell, bwd, plan)
    order = _needed(g, [*cell.next_state.values(), cell.output, *kept])
    k = tidy_kernel(cell, g, plan, py, spec_names(g, cell.names, cell.next_state))
    k.fold(g, [order], {*cell.next_state.values(), cell.output, *kept})
    sig = Signature()
    _common(k, cell, py, sig)
    h0 = {s: sig.arg(k.sptr("h0", s), py(("h0", s), state_word(cell, "h0", s))) for s in states}
    p_y = sig.arg(k.ptr("out", "y"), py(("t", y_name), y_name))
    ht = {s: sig.arg(k.sptr("ht", s), py(("ht", s), state_word(cell, "ht", s))) for s in states}
    saved = saved_names(cell, bwd, plan, py)
    ck = {s: sig.arg(k.sptr("ck", s), n) for s, n in zip(states, saved)}
    p_kept = {
        i: sig.arg(k.ns(("stash", i), f"p_kept_{cell.names.get(i, i)}"), n)
        for i, n in zip(kept, saved[len(states) :])
    }
    _sizes(sig, py, plan.axes)
    k.lines += sig.define(f"{name}_fwd_kernel")
    k.prologue()
    k.w("NC = tl.cdiv(T, CHUNK)")
    if history:
        k.w(f"pid = i_b * {plan.n_tiles} + i_s")
    tensors = [*((k.ptr("in", n), ax) for n, ax in cell.inputs.items())]
    tensors += [(k.ptr("const", c), ax) for c, ax in cell.consts.items()]
    tensors += [(p[s], cell.states[s]) for p in (h0, ht) for s in states]
    tensors += [(ck[s], ax, True) if history else (ck[s], ax) for s, ax in cell.states.items()]
    tensors += [(p_y, cell.output_axes)]
    tensors += [(p_kept[i], g[i].axes, True) for i in kept]
    _rebase(k, tensors)
    k.load_consts(cell, _leaf_ids(g, order, Op.PARAM))
    for s in states:
        ax = cell.states[s]
        k.w(f"{k.blk(s)} = {k.load(f'{h0[s]} + i_b * {k.numel(ax)}', ax)}")
    _fwd_steps(k, cell, order, p_y, ht, ck, p_kept)
    params = [*_inputs(cell, py, k), *(py(("h0", s), "") for s in states)]
    launcher = launcher_def(f"{name}_fwd", params, plan)
    launcher += _fwd_buffers(cell, plan, py, y_name, saved, kept)
    launcher += sig.launch(f"{name}_fwd_kernel", f"(B, {plan.n_tiles})")
    rets = [py(("t", y_name), ""), *(py(("ht", s), "") for s in states), *saved]
    launcher.append(f"    return {', '.join(rets)}")
    return k.lines, launcher


def _fwd_steps(k: _Kernel, cell: Cell, order, p_y: str, ht: dict, ck: dict, p_kept: dict) -> None:
    """The forward's loop over time: each step's checkpoint (or kept state and values), the step, its
    readout; then the final states."""
    g, plan, states, history = cell.graph, k.plan, list(cell.states), keeps_history(k.plan)
    loads = _token_loads(k, g, order)
    _prefetch_first(k, loads, str, lambda d: f"{d} < T", 1)
    k.w("for t in range(T):")
    _prefetch_next(k, loads, lambda d: f"t + {d}", lambda d: f"t + {d} < T", 2)
    if history:  # every step's state, as the program's registers (padding included)
        for s in states:
            at = f"{ck[s]} + (pid * (T + 1) + t) * {_block(plan, cell.states[s])}"
            k.w(f"tl.store({at}, {k.blk(s)})", 2)
    else:
        k.w("if t % CHUNK == 0:", 2)
        for s in states:
            at = f"{ck[s]} + (i_b * NC + t // CHUNK) * {k.numel(cell.states[s])}"
            k.store(at, k.blk(s), cell.states[s], 3)
    k.compute(g, order, 2)
    for i in p_kept:
        k.w(f"tl.store({p_kept[i]} + (pid * T + t) * {_block(plan, g[i].axes)}, {k.val(i)})", 2)
    y_ax = cell.output_axes
    y_val = f"{k.val(cell.output)}.to({p_y}.dtype.element_ty)"
    k.store(f"{p_y} + (i_b * T + t) * {k.numel(y_ax)}", y_val, y_ax, 2)
    for s in states:
        k.w(f"{k.blk(s)} = {k.where(cell.states[s], k.val(cell.next_state[s]))}", 2)
    for s in states:
        k.store(f"{ht[s]} + i_b * {k.numel(cell.states[s])}", k.blk(s), cell.states[s])
        if history:  # the last new state, read back as S' by the backward's last step
            k.w(f"tl.store({ck[s]} + (pid * (T + 1) + T) * {_block(plan, cell.states[s])}, {k.blk(s)})")


def _block(plan: Plan, axes) -> int:
    """Elements of a program's padded register block of a tensor with these axes."""
    return math.prod(plan.block[a] for a in axes)


def _fwd_buffers(cell: Cell, plan: Plan, py: PyNames, y_name: str, saved, kept) -> list[str]:
    """The forward launcher's docstring and its outputs' allocations."""
    first = py(("t", next(iter(cell.inputs))), "")
    y = py(("t", y_name), y_name)
    what = (
        "every step's states and kept values" if keeps_history(plan) else "the checkpoints every chunk steps"
    )
    lines = [
        f'    """-> {y} (the inputs\' dtype), the final states, {what} (fp32)."""',
        f"    B, T = {first}.shape[:2]",
        f"    {y} = {first}.new_empty({py.dims('B, T', cell.output_axes)})",
    ]
    tiles = plan.n_tiles
    for s, ck in zip(cell.states, saved):
        ax = cell.states[s]
        lines.append(f"    {py(('ht', s), '')} = {first}.new_empty({py.dims('B', ax)}, dtype=torch.float32)")
        shape = (
            f"B * {tiles} * (T + 1) * {_block(plan, ax)}"
            if keeps_history(plan)
            else py.dims("B, triton.cdiv(T, chunk)", ax)
        )
        lines.append(f"    {ck} = {first}.new_empty({shape}, dtype=torch.float32)")
    for i, n in zip(kept, saved[len(cell.states) :]):
        numel = _block(plan, cell.graph[i].axes)
        lines.append(f"    {n} = {first}.new_empty(B * {tiles} * T * {numel}, dtype=torch.float32)")
    return lines


def _inputs(cell: Cell, py: PyNames, k: _Kernel) -> list[str]:
    """The Python names of the cell's per-token inputs and constants, in the kernels' order."""
    return [py(("t", n), n) for n in cell.inputs] + [py(("c", c), k.label(c)) for c in cell.consts]


def launcher_def(name: str, params: list[str], plan: Plan) -> list[str]:
    return [call(f"def {name}", [*params, f"chunk={plan.chunk}", f"num_warps={plan.num_warps}"], ":", 0)]


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
