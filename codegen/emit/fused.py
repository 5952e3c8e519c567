"""The fused sequential loop's kernels and their launchers.

The forward kernel holds a program's slice of each state in registers for the whole sequence, stores
a checkpoint every ``CHUNK`` steps and the final state; the backward walks the segments in reverse,
recomputes each from its checkpoint into scratch, then runs the derived backward step in reverse time.
Each kernel's ``Signature`` writes both its ``def`` line and its launcher's launch.
"""

from __future__ import annotations

import math

from archdsl.codegen.emit.signature import PyNames, Signature, call
from archdsl.codegen.emit.triton import LEAVES, _Kernel, _leaf_ids, _needed, const_labels, spec_names
from archdsl.codegen.plan import Plan

from archdsl.autodiff import GRAD, Backward, Cell
from archdsl.ir import Graph, Kind, Op

#: the most programs whose parts of one gradient element the backward adds in place (atomically);
#: two parts add up to the same bits in either order, more would not, so more are stored apart and
#: summed after the kernel, keeping the gradients deterministic
ADD_TILES = 2
#: steps whose per-token values are in flight while a step computes (E88_d12h32 on an H100: two
#: ran 2-4% slower than one, the extra registers costing more than the longer lead saved)
AHEAD = 1
#: what the reverse walk loads one step ahead from the recompute's scratch: the states, the stash
AHEAD_SCRATCH = ("state", "stash")


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


def emit_forward(cell: Cell, plan: Plan, name: str, py: PyNames, y_name: str = "y") -> tuple[list, list]:
    """(the forward kernel's lines, its launcher's lines)."""
    g = cell.graph
    order = _needed(g, [*cell.next_state.values(), cell.output])
    states = list(cell.states)
    k = tidy_kernel(cell, g, plan, py, spec_names(g, cell.names, cell.next_state))
    k.fold(g, [order], {*cell.next_state.values(), cell.output})
    sig = Signature()
    _common(k, cell, py, sig)
    h0 = {s: sig.arg(k.sptr("h0", s), py(("h0", s), state_word(cell, "h0", s))) for s in states}
    p_y = sig.arg(k.ptr("out", "y"), py(("t", y_name), y_name))
    ht = {s: sig.arg(k.sptr("ht", s), py(("ht", s), state_word(cell, "ht", s))) for s in states}
    ck = {s: sig.arg(k.sptr("ck", s), py(("ck", s), state_word(cell, "ck", s))) for s in states}
    _sizes(sig, py, plan.axes)
    k.lines += sig.define(f"{name}_fwd_kernel")
    k.prologue()
    k.w("NC = tl.cdiv(T, CHUNK)")
    tensors = [*((k.ptr("in", n), ax) for n, ax in cell.inputs.items())]
    tensors += [(k.ptr("const", c), ax) for c, ax in cell.consts.items()]
    tensors += [(p[s], cell.states[s]) for p in (h0, ht, ck) for s in states] + [(p_y, cell.output_axes)]
    _rebase(k, tensors)
    k.load_consts(cell, _leaf_ids(g, order, Op.PARAM))
    for s in states:
        ax = cell.states[s]
        k.w(f"{k.blk(s)} = {k.load(f'{h0[s]} + i_b * {k.numel(ax)}', ax)}")
    loads = _token_loads(k, g, order)
    _prefetch_first(k, loads, str, lambda d: f"{d} < T", 1)
    k.w("for t in range(T):")
    _prefetch_next(k, loads, lambda d: f"t + {d}", lambda d: f"t + {d} < T", 2)
    k.w("if t % CHUNK == 0:", 2)
    for s in states:
        k.store(f"{ck[s]} + (i_b * NC + t // CHUNK) * {k.numel(cell.states[s])}", k.blk(s), cell.states[s], 3)
    k.compute(g, order, 2)
    y_ax = cell.output_axes
    y_val = f"{k.val(cell.output)}.to({p_y}.dtype.element_ty)"
    k.store(f"{p_y} + (i_b * T + t) * {k.numel(y_ax)}", y_val, y_ax, 2)
    for s in states:
        k.w(f"{k.blk(s)} = {k.where(cell.states[s], k.val(cell.next_state[s]))}", 2)
    for s in states:
        k.store(f"{ht[s]} + i_b * {k.numel(cell.states[s])}", k.blk(s), cell.states[s])
    first = py(("t", next(iter(cell.inputs))), "")
    params = [*_inputs(cell, py, k), *(py(("h0", s), "") for s in states)]
    launcher = [
        *launcher_def(f"{name}_fwd", params, plan),
        f'    """-> {py(("t", y_name), y_name)} (the inputs\' dtype), the final states, the checkpoints'
        f' every chunk steps (fp32)."""',
        f"    B, T = {first}.shape[:2]",
        f"    {py(('t', y_name), y_name)} = {first}.new_empty({py.dims('B, T', y_ax)})",
    ]
    for s in states:
        hts, cks = py.dims("B", cell.states[s]), py.dims("B, triton.cdiv(T, chunk)", cell.states[s])
        launcher.append(f"    {py(('ht', s), '')} = {first}.new_empty({hts}, dtype=torch.float32)")
        launcher.append(f"    {py(('ck', s), '')} = {first}.new_empty({cks}, dtype=torch.float32)")
    launcher += sig.launch(f"{name}_fwd_kernel", f"(B, {plan.n_tiles})")
    rets = [py(("t", y_name), ""), *(py(("ht", s), "") for s in states), *(py(("ck", s), "") for s in states)]
    launcher.append(f"    return {', '.join(rets)}")
    return k.lines, launcher


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


def missing_split(plan: Plan, axes) -> tuple[str, ...]:
    return tuple(a for a in plan.split if a not in axes)


def _tile_index(k: _Kernel, axes) -> str:
    idx = "0"
    for a in axes:
        idx = f"({idx}) * {k.plan.tiles[a]} + {k.ax('i', a)}" if idx != "0" else k.ax("i", a)
    return idx


def emit_backward(cell: Cell, bwd: Backward, plan: Plan, name: str, py: PyNames, y_name="y") -> tuple:
    """(the backward kernel's lines, its launcher's lines)."""
    g = bwd.graph
    states, ins, consts = list(cell.states), list(cell.inputs), list(cell.consts)
    outs = [*bwd.d_state.values(), *bwd.d_inputs.values(), *bwd.d_consts.values()]
    stash = stash_nodes(cell, bwd)
    own = [i for i, s in stash.items() if s is None]
    order = sorted(g.ancestors(outs, stop=stash))  # values in the stash are read, not recomputed
    fwd_order = _needed(cell.graph, [*cell.next_state.values(), *stash])
    names = spec_names(g, cell.names, cell.next_state, bwd.cotangent, len(cell.graph))
    k = tidy_kernel(cell, g, plan, py, names)
    k.fold(g, [fwd_order, order], {*outs, *stash, *cell.next_state.values()})
    sig = Signature()
    _common(k, cell, py, sig)
    ck = {s: sig.arg(k.sptr("ck", s), py(("ck", s), state_word(cell, "ck", s))) for s in states}
    p_dy = sig.arg(k.ptr("in", GRAD + "y"), py(("d", y_name), "d" + y_name))
    dht = {s: sig.arg(k.sptr("dht", s), py(("dht", s), state_word(cell, "dht", s))) for s in states}
    scr = {s: sig.arg(k.sptr("scr", s), py(("scr", s), state_word(cell, "scr", s))) for s in states}
    label = {i: cell.names.get(i, str(i)) for i in own}
    p_stash = {
        i: sig.arg(k.ns(("stash", i), f"p_stash_{label[i]}"), py(("stash", i), f"stash_{label[i]}"))
        for i in own
    }
    d_in = {n: sig.arg(k.dptr("in", n), py(("d", n), "d" + n)) for n in ins}
    d_c = {c: sig.arg(k.dptr("const", c), py(("dc", c), "d" + k.label(c))) for c in consts}
    dh0 = {s: sig.arg(k.sptr("dh0", s), py(("dh0", s), state_word(cell, "dh0", s))) for s in states}
    _sizes(sig, py, plan.axes)
    k.lines += sig.define(f"{name}_bwd_kernel")
    k.prologue()
    k.w("NC = tl.cdiv(T, CHUNK)")
    k.w(f"pid = i_b * {plan.n_tiles} + i_s")
    tensors = [*((k.ptr("in", n), ax) for n, ax in cell.inputs.items())]
    tensors += [(k.ptr("const", c), ax) for c, ax in cell.consts.items()]
    tensors += [(p[s], cell.states[s]) for p in (ck, dht, dh0) for s in states] + [(p_dy, cell.output_axes)]
    tensors += [(scr[s], cell.states[s], True) for s in states] + [(p_stash[i], g[i].axes, True) for i in own]
    tensors += [(d_in[n], cell.inputs[n]) for n in ins] + [(d_c[c], cell.consts[c]) for c in consts]
    _rebase(k, tensors)
    k.load_consts(cell, {**_leaf_ids(cell.graph, fwd_order, Op.PARAM), **_leaf_ids(g, order, Op.PARAM)})
    for c in consts:
        k.w(f"{k.dblk('const', c)} = tl.zeros({k.shape(cell.consts[c])}, tl.float32)")
    for s in states:
        ax = cell.states[s]
        k.w(f"{k.dblk('state', s)} = {k.load(f'{dht[s]} + i_b * {k.numel(ax)}', ax)}")
    k.w("for i_c in range(NC):")
    k.w("c = NC - 1 - i_c", 2)
    k.w("t0 = c * CHUNK", 2)
    k.w("L = tl.minimum(T - t0, CHUNK)", 2)

    def block(s: str) -> str:
        return str(math.prod(plan.block[a] for a in cell.states[s]))

    def stash_at(i: int, step: str = "s") -> str:
        return f"{p_stash[i]} + (pid * CHUNK + {step}) * {math.prod(plan.block[a] for a in g[i].axes)}"

    # 1) recompute the segment's states from its checkpoint into scratch
    for s in states:
        ax = cell.states[s]
        k.w(f"{k.blk(s)} = {k.load(f'{ck[s]} + (i_b * NC + c) * {k.numel(ax)}', ax)}", 2)
    rec_loads = _token_loads(k, cell.graph, fwd_order)
    _prefetch_first(k, rec_loads, lambda d: f"t0 + {d}" if d else "t0", lambda d: f"{d} < L", 2)
    k.w("for s in range(L):", 2)
    k.w("t = t0 + s", 3)
    _prefetch_next(k, rec_loads, lambda d: f"t + {d}", lambda d: f"s + {d} < L", 3)
    for s in states:
        k.w(f"tl.store({scr[s]} + (pid * (CHUNK + 1) + s) * {block(s)}, {k.blk(s)})", 3)
    k.compute(cell.graph, fwd_order, 3)
    for i in own:
        k.w(f"tl.store({stash_at(i)}, {k.val(i)})", 3)
    for s in states:
        k.w(f"{k.blk(s)} = {k.where(cell.states[s], k.val(cell.next_state[s]))}", 3)
    for s in states:  # the segment's last new state: read back as S' by its last step
        k.w(f"tl.store({scr[s]} + (pid * (CHUNK + 1) + L) * {block(s)}, {k.blk(s)})", 2)
    k.w("tl.debug_barrier()", 2)
    # 2) walk the segment backwards
    bwd_loads = _token_loads(k, g, order)
    _prefetch_first(k, bwd_loads, lambda d: f"t0 + L - {d + 1}", lambda d: f"L > {d}", 2)
    leaves = _leaf_ids(g, order, Op.STATE)
    scratch = _ScratchReads(k, cell, stash, leaves, scr, block, stash_at)
    scratch.first()
    k.w("for s2 in range(L):", 2)
    k.w("s = L - 1 - s2", 3)
    k.w("t = t0 + s", 3)
    _prefetch_next(k, bwd_loads, lambda d: f"t - {d}", lambda d: f"s > {d - 1}", 3)
    scratch.step()
    for s in states:
        if GRAD + s in leaves and k.val(leaves[GRAD + s]) != k.dblk("state", s):
            k.w(f"{k.val(leaves[GRAD + s])} = {k.dblk('state', s)}", 3)
    k.compute(g, order, 3, skip=stash)
    for n in ins:
        ax = cell.inputs[n]
        miss = missing_split(plan, ax)
        nt = math.prod(plan.tiles[a] for a in miss)
        if nt <= ADD_TILES:  # one program's gradient, or the sum of two added in place
            at = f"{d_in[n]} + (i_b * T + t) * {k.numel(ax)}"
            (k.store if nt == 1 else k.atomic_add)(at, k.val(bwd.d_inputs[n]), ax, 3)
        else:
            at = f"{d_in[n]} + ((i_b * T + t) * {nt} + {_tile_index(k, miss)}) * {k.numel(ax)}"
            k.store(at, k.val(bwd.d_inputs[n]), ax, 3)
    for c in consts:
        k.w(f"{k.dblk('const', c)} += {k.val(bwd.d_consts[c])}", 3)
    for s in states:
        k.w(f"{k.dblk('state', s)} = {k.where(cell.states[s], k.val(bwd.d_state[s]))}", 3)
    k.w("tl.debug_barrier()", 2)
    for s in states:
        k.store(f"{dh0[s]} + i_b * {k.numel(cell.states[s])}", k.dblk("state", s), cell.states[s])
    for c in consts:
        k.store(f"{d_c[c]} + pid * {k.numel(cell.consts[c])}", k.dblk("const", c), cell.consts[c])
    return k.lines, _bwd_launcher(cell, plan, name, py, sig, stash, y_name)


_SHARED = {
    False: "gradients whose every element two programs share: each adds its part in place",
    True: "gradients shared by more programs: a part per program, summed below",
}


class _ScratchReads:
    """The reverse walk's reads of what the segment recompute stored: each step's state ``S`` and
    the stashed values, each loaded one step ahead (``n_S``, ``n_delta``) so the load overlaps the
    step before it; a new state ``S'`` is the ``S`` the step after it read, carried in registers."""

    def __init__(self, k, cell, stash, leaves, scr, block, stash_at):
        self.k, self.stash, self.leaves, self.scr, self.block = k, stash, leaves, scr, block
        self.stash_at = stash_at
        self.states = [s for s in cell.states if s in leaves]
        self.carried = {i: s for i, s in stash.items() if s in self.states}

    def at(self, s: str, step: str) -> str:
        return f"{self.scr[s]} + (pid * (CHUNK + 1) + {step}) * {self.block(s)}"

    def reads(self):
        """(register, next-step register or None, address at step ``{s}``) of every value loaded;
        the next-step register is None where the value is loaded in its own step."""
        k = self.k
        out = []
        for s in self.states:
            out.append(
                (
                    k.val(self.leaves[s]),
                    k.nxt(self.leaves[s]) if "state" in AHEAD_SCRATCH else None,
                    self.at(s, "{s}"),
                )
            )
        for i, s in self.stash.items():
            nxt = k.nxt(i) if "stash" in AHEAD_SCRATCH else None
            if s is None:
                out.append((k.val(i), nxt, self.stash_at(i, "{s}")))
            elif i not in self.carried:
                out.append((k.val(i), nxt, self.at(s, "{s} + 1")))
        return out

    def first(self) -> None:
        """Before the walk: the last step's values, and the new states it reads (carried after)."""
        for s in self.carried.values():
            self.k.w(f"{self.k.val(self.leaves[s])} = tl.load({self.at(s, 'L')})", 2)
        for _, nxt, at in self.reads():
            if nxt is not None:
                self.k.w(f"{nxt} = tl.load({at.format(s='L - 1')})", 2)

    def step(self) -> None:
        for i, s in self.carried.items():
            self.k.w(f"{self.k.val(i)} = {self.k.val(self.leaves[s])}", 3)
        for val, nxt, at in self.reads():
            if nxt is None:
                self.k.w(f"{val} = tl.load({at.format(s='s')})", 3)
                continue
            self.k.w(f"{val} = {nxt}", 3)
            self.k.w(f"{nxt} = tl.load({at.format(s='s - 1')}, mask=z0 + s > 0, other=0.0)", 3)


def _bwd_launcher(cell: Cell, plan: Plan, name: str, py: PyNames, sig: Signature, stash, y_name) -> list:
    states, first = list(cell.states), py(("t", next(iter(cell.inputs))), "")
    k = tidy_kernel(cell, cell.graph, plan, py, {})
    params = [*_inputs(cell, py, k), *(py(("ck", s), "") for s in states), py(("d", y_name), "")]
    params += [py(("dht", s), "") for s in states]
    tiles = plan.n_tiles

    def new(shape: str, zeros: bool = False) -> str:
        return f"{first}.new_{'zeros' if zeros else 'empty'}({shape}, dtype=torch.float32)"

    lines = [
        *launcher_def(f"{name}_bwd", params, plan),
        '    """-> the gradients of the inputs, the constants and the initial states."""',
        f"    B, T = {first}.shape[:2]",
        f"    {py(('d', y_name), '')} = {py(('d', y_name), '')}.contiguous()",
    ]
    lines += [f"    {py(('dht', s), '')} = {py(('dht', s), '')}.float().contiguous()" for s in states]
    lines.append("    # scratch: each program's recomputed states of a segment, and values it reads back")
    for s in states:
        numel = math.prod(plan.block[a] for a in cell.states[s])
        lines.append(f"    {py(('scr', s), '')} = {new(f'B * {tiles} * (chunk + 1) * {numel}')}")
    for i, s in stash.items():
        if s is None:
            numel = math.prod(plan.block[a] for a in cell.graph[i].axes)
            lines.append(f"    {py(('stash', i), '')} = {new(f'B * {tiles} * chunk * {numel}')}")
    rets, said = [], set()
    for n, ax in cell.inputs.items():
        nt = math.prod(plan.tiles[a] for a in missing_split(plan, ax))
        d, dtype = py(("d", n), ""), f"{py(('t', n), '')}.dtype"
        apart = nt > ADD_TILES
        if nt > 1 and apart not in said:
            said.add(apart)
            lines.append(f"    # {_SHARED[apart]}")
        lines.append(f"    {d} = {new(py.dims('B, T', nt if apart else '', ax), zeros=1 < nt <= ADD_TILES)}")
        rets.append(f"{d}{'.sum(2)' if apart else ''}.to({dtype})")
    for c, ax in cell.consts.items():
        d = py(("dc", c), "")
        lines.append(f"    {d} = {new(py.dims(f'B * {tiles}', ax), zeros=True)}")
        rets.append(f"{d}.sum(0).to({py(('c', c), '')}.dtype)")
    for s in states:
        lines.append(f"    {py(('dh0', s), '')} = {new(py.dims('B', cell.states[s]))}")
        rets.append(py(("dh0", s), ""))
    lines += sig.launch(f"{name}_bwd_kernel", f"(B, {tiles})")
    lines.append(f"    return {', '.join(rets)}")
    return lines
