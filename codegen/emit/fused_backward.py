"""The fused sequential loop's backward kernel and its launcher.

With a checkpoint every ``CHUNK`` steps the kernel walks the segments in reverse: it recomputes a
segment's states from its checkpoint into scratch, then runs the derived backward step in reverse
time over them. With a checkpoint at every step (``chunk=1``) the forward has kept each step's state
and the values the backward reads back (``fused.kept_values``), and the kernel is one reverse walk over
the whole sequence that recomputes nothing.
"""

from __future__ import annotations

import math

from archdsl.codegen.emit.fused import (
    _common,
    _inputs,
    _prefetch_first,
    _prefetch_next,
    _rebase,
    _sizes,
    _token_loads,
    keeps_history,
    kept_values,
    launcher_def,
    saved_names,
    stash_nodes,
    state_word,
    tidy_kernel,
)
from archdsl.codegen.emit.signature import PyNames, Signature
from archdsl.codegen.emit.triton import _leaf_ids, _needed, spec_names
from archdsl.codegen.plan import Plan

from archdsl.autodiff import GRAD, Backward, Cell
from archdsl.ir import Op

#: the most programs whose parts of one gradient element the backward adds in place (atomically);
#: two parts add up to the same bits in either order, more would not, so more are stored apart and
#: summed after the kernel, keeping the gradients deterministic
ADD_TILES = 2
#: steps before its step that the reverse walk loads a state or stashed value: from the recompute's
#: scratch (written moments before, in L2), and from the forward's histories at ``chunk=1`` (two
#: ahead: E88_h8n64 2.362 -> 2.256 ms, E88_d12h32 1.249 -> 1.263, E75h4n32 0.981 -> 1.017; H200,
#: round 24 call 2)
AHEAD_SCRATCH = 1
AHEAD_HISTORY = 1


def missing_split(plan: Plan, axes) -> tuple[str, ...]:
    return tuple(a for a in plan.split if a not in axes)


def _tile_index(k, axes) -> str:
    idx = "0"
    for a in axes:
        idx = f"({idx}) * {k.plan.tiles[a]} + {k.ax('i', a)}" if idx != "0" else k.ax("i", a)
    return idx


def emit_backward(cell: Cell, bwd: Backward, plan: Plan, name: str, py: PyNames, y_name="y") -> tuple:
    """(the backward kernel's lines, its launcher's lines)."""
    kb = _BackwardKernel(cell, bwd, plan, py, y_name)
    k, history = kb.k, keeps_history(plan)
    k.lines += kb.sig.define(f"{name}_bwd_kernel")
    kb.setup()
    if history:
        k.w("# the forward kept every step's state and stashed values: one walk, nothing recomputed")
        k.w("t0 = 0")
        k.w("L = T")
        kb.walk(1)
    else:
        k.w("for i_c in range(NC):")
        k.w("c = NC - 1 - i_c", 2)
        k.w("t0 = c * CHUNK", 2)
        k.w("L = tl.minimum(T - t0, CHUNK)", 2)
        kb.recompute()
        kb.walk(2)
        k.w("tl.debug_barrier()", 2)
    for s in cell.states:
        k.store(f"{kb.dh0[s]} + i_b * {k.numel(cell.states[s])}", k.dblk("state", s), cell.states[s])
    for c in cell.consts:
        k.store(f"{kb.d_c[c]} + pid * {k.numel(cell.consts[c])}", k.dblk("const", c), cell.consts[c])
    saved = saved_names(cell, bwd, plan, py)
    return k.lines, _bwd_launcher(cell, plan, name, py, kb.sig, kb.stash, y_name, saved)


class _BackwardKernel:
    """The backward kernel's writer, its pointers and the addresses of what it reads back: the
    recompute's scratch (``pid * (CHUNK + 1) + step``), or with ``chunk=1`` the forward's kept
    histories (``pid * (T + 1) + step``), both laid out as each program's padded registers."""

    def __init__(self, cell: Cell, bwd: Backward, plan: Plan, py: PyNames, y_name: str):
        self.cell, self.bwd, self.plan = cell, bwd, plan
        g = self.g = bwd.graph
        self.outs = [*bwd.d_state.values(), *bwd.d_inputs.values(), *bwd.d_consts.values()]
        self.stash = stash = stash_nodes(cell, bwd)
        if keeps_history(plan) and not kept_values(cell, bwd, plan):  # recomputed from the kept states
            self.stash = stash = {i: s for i, s in stash.items() if s is not None}
        self.own = own = [i for i, s in stash.items() if s is None]
        self.order = sorted(g.ancestors(self.outs, stop=stash))  # the stash is read, not recomputed
        self.fwd_order = _needed(cell.graph, [*cell.next_state.values(), *stash])
        names = spec_names(g, cell.names, cell.next_state, bwd.cotangent, len(cell.graph))
        k = self.k = tidy_kernel(cell, g, plan, py, names)
        k.fold(g, [self.fwd_order, self.order], {*self.outs, *stash, *cell.next_state.values()})
        sig = self.sig = Signature()
        _common(k, cell, py, sig)
        history, states = keeps_history(plan), list(cell.states)
        self.ck = {s: sig.arg(k.sptr("ck", s), py(("ck", s), state_word(cell, "ck", s))) for s in states}
        label = {i: cell.names.get(i, str(i)) for i in own}
        if history:  # the forward's kept values, after its states
            kept = saved_names(cell, bwd, plan, py)[len(states) :]
            self.p_stash = {
                i: sig.arg(k.ns(("stash", i), f"p_kept_{label[i]}"), n) for i, n in zip(own, kept)
            }
        self.p_dy = sig.arg(k.ptr("in", GRAD + "y"), py(("d", y_name), "d" + y_name))
        self.dht = {s: sig.arg(k.sptr("dht", s), py(("dht", s), state_word(cell, "dht", s))) for s in states}
        if history:
            self.scr, self.span = self.ck, "T"
        else:
            self.scr = {
                s: sig.arg(k.sptr("scr", s), py(("scr", s), state_word(cell, "scr", s))) for s in states
            }
            self.p_stash = {
                i: sig.arg(k.ns(("stash", i), f"p_stash_{label[i]}"), py(("stash", i), f"stash_{label[i]}"))
                for i in own
            }
            self.span = "CHUNK"
        self.d_in = {n: sig.arg(k.dptr("in", n), py(("d", n), "d" + n)) for n in cell.inputs}
        self.d_c = {c: sig.arg(k.dptr("const", c), py(("dc", c), "d" + k.label(c))) for c in cell.consts}
        self.dh0 = {s: sig.arg(k.sptr("dh0", s), py(("dh0", s), state_word(cell, "dh0", s))) for s in states}
        _sizes(sig, py, plan.axes)

    def block(self, s: str) -> str:
        return str(math.prod(self.plan.block[a] for a in self.cell.states[s]))

    def state_at(self, s: str, step: str) -> str:
        return f"{self.scr[s]} + (pid * ({self.span} + 1) + {step}) * {self.block(s)}"

    def stash_at(self, i: int, step: str = "s") -> str:
        numel = math.prod(self.plan.block[a] for a in self.g[i].axes)
        return f"{self.p_stash[i]} + (pid * {self.span} + {step}) * {numel}"

    def setup(self) -> None:
        """Sizes, this program's pointers, the constants, the zeroed constant gradients and the final
        states' cotangents."""
        k, cell, plan = self.k, self.cell, self.plan
        k.prologue()
        k.w("NC = tl.cdiv(T, CHUNK)")
        k.w(f"pid = i_b * {plan.n_tiles} + i_s")
        history = keeps_history(plan)
        tensors = [*((k.ptr("in", n), ax) for n, ax in cell.inputs.items())]
        tensors += [(k.ptr("const", c), ax) for c, ax in cell.consts.items()]
        tensors += [(self.ck[s], ax, True) if history else (self.ck[s], ax) for s, ax in cell.states.items()]
        tensors += [(p[s], ax) for p in (self.dht, self.dh0) for s, ax in cell.states.items()]
        tensors += [(self.p_dy, cell.output_axes)]
        if not history:
            tensors += [(self.scr[s], ax, True) for s, ax in cell.states.items()]
        tensors += [(self.p_stash[i], self.g[i].axes, True) for i in self.own]
        tensors += [(self.d_in[n], ax) for n, ax in cell.inputs.items()]
        tensors += [(self.d_c[c], ax) for c, ax in cell.consts.items()]
        _rebase(k, tensors)
        k.load_consts(
            cell,
            {**_leaf_ids(cell.graph, self.fwd_order, Op.PARAM), **_leaf_ids(self.g, self.order, Op.PARAM)},
        )
        for c in cell.consts:
            k.w(f"{k.dblk('const', c)} = tl.zeros({k.shape(cell.consts[c])}, tl.float32)")
        for s, ax in cell.states.items():
            k.w(f"{k.dblk('state', s)} = {k.load(f'{self.dht[s]} + i_b * {k.numel(ax)}', ax)}")

    def recompute(self) -> None:
        """The segment's states from its checkpoint into scratch, and the stashed values."""
        k, cell = self.k, self.cell
        for s, ax in cell.states.items():
            k.w(f"{k.blk(s)} = {k.load(f'{self.ck[s]} + (i_b * NC + c) * {k.numel(ax)}', ax)}", 2)
        loads = _token_loads(k, cell.graph, self.fwd_order)
        _prefetch_first(k, loads, lambda d: f"t0 + {d}" if d else "t0", lambda d: f"{d} < L", 2)
        k.w("for s in range(L):", 2)
        k.w("t = t0 + s", 3)
        _prefetch_next(k, loads, lambda d: f"t + {d}", lambda d: f"s + {d} < L", 3)
        for s in cell.states:
            k.w(f"tl.store({self.state_at(s, 's')}, {k.blk(s)})", 3)
        k.compute(cell.graph, self.fwd_order, 3)
        for i in self.own:
            k.w(f"tl.store({self.stash_at(i)}, {k.val(i)})", 3)
        for s in cell.states:
            k.w(f"{k.blk(s)} = {k.where(cell.states[s], k.val(cell.next_state[s]))}", 3)
        for s in cell.states:  # the segment's last new state: read back as S' by its last step
            k.w(f"tl.store({self.state_at(s, 'L')}, {k.blk(s)})", 2)
        k.w("tl.debug_barrier()", 2)

    def walk(self, ind: int) -> None:
        """The derived backward step in reverse time over steps ``t0 .. t0 + L - 1``, at indent
        ``ind``: the per-token gradients stored (or added in place), the carried cotangents updated."""
        k, cell, bwd, plan, g = self.k, self.cell, self.bwd, self.plan, self.g
        loads = _token_loads(k, g, self.order)
        _prefetch_first(k, loads, lambda d: f"t0 + L - {d + 1}", lambda d: f"L > {d}", ind)
        leaves = _leaf_ids(g, self.order, Op.STATE)
        ahead = AHEAD_HISTORY if keeps_history(plan) else AHEAD_SCRATCH
        scratch = _ScratchReads(k, cell, self.stash, leaves, self.state_at, self.stash_at, ahead)
        scratch.first(ind)
        k.w("for s2 in range(L):", ind)
        k.w("s = L - 1 - s2", ind + 1)
        k.w("t = t0 + s", ind + 1)
        _prefetch_next(k, loads, lambda d: f"t - {d}", lambda d: f"s > {d - 1}", ind + 1)
        scratch.step(ind + 1)
        for s in cell.states:
            if GRAD + s in leaves and k.val(leaves[GRAD + s]) != k.dblk("state", s):
                k.w(f"{k.val(leaves[GRAD + s])} = {k.dblk('state', s)}", ind + 1)
        k.compute(g, self.order, ind + 1, skip=self.stash)
        for n, ax in cell.inputs.items():
            miss = missing_split(plan, ax)
            nt = math.prod(plan.tiles[a] for a in miss)
            if nt <= ADD_TILES:  # one program's gradient, or the sum of two added in place
                at = f"{self.d_in[n]} + (i_b * T + t) * {k.numel(ax)}"
                (k.store if nt == 1 else k.atomic_add)(at, k.val(bwd.d_inputs[n]), ax, ind + 1)
            else:
                at = f"{self.d_in[n]} + ((i_b * T + t) * {nt} + {_tile_index(k, miss)}) * {k.numel(ax)}"
                k.store(at, k.val(bwd.d_inputs[n]), ax, ind + 1)
        for c in cell.consts:
            k.w(f"{k.dblk('const', c)} += {k.val(bwd.d_consts[c])}", ind + 1)
        for s in cell.states:
            k.w(f"{k.dblk('state', s)} = {k.where(cell.states[s], k.val(bwd.d_state[s]))}", ind + 1)


_SHARED = {
    False: "gradients whose every element two programs share: each adds its part in place",
    True: "gradients shared by more programs: a part per program, summed below",
}


class _ScratchReads:
    """The reverse walk's reads of the states and stashed values (the recompute's scratch or the
    forward's histories): each loaded ``ahead`` steps before its step (``n_S``, ``n2_S``, …) so the
    load overlaps the steps in between; a new state ``S'`` is the ``S`` the step after it read,
    carried in registers."""

    def __init__(self, k, cell, stash, leaves, state_at, stash_at, ahead: int):
        self.k, self.stash, self.leaves, self.state_at, self.stash_at = k, stash, leaves, state_at, stash_at
        self.states = [s for s in cell.states if s in leaves]
        self.carried = {i: s for i, s in stash.items() if s in self.states}
        self.ahead = ahead

    def reads(self):
        """(register, its node, address at step ``{s}``) of every value loaded."""
        k = self.k
        out = [(k.val(self.leaves[s]), self.leaves[s], self.state_at(s, "{s}")) for s in self.states]
        for i, s in self.stash.items():
            if s is None:
                out.append((k.val(i), i, self.stash_at(i, "{s}")))
            elif i not in self.carried:
                out.append((k.val(i), i, self.state_at(s, "{s} + 1")))
        return out

    def first(self, ind: int) -> None:
        """Before the walk: the last steps' values, and the new states the last step reads (carried
        after)."""
        for s in self.carried.values():
            self.k.w(f"{self.k.val(self.leaves[s])} = tl.load({self.state_at(s, 'L')})", ind)
        for d in range(self.ahead):
            for _, i, at in self.reads():
                mask = f", mask=z0 + L > {d}, other=0.0" if d else ""
                self.k.w(f"{self.k.nxt(i, d)} = tl.load({at.format(s=f'L - {d + 1}')}{mask})", ind)

    def step(self, ind: int) -> None:
        k = self.k
        for i, s in self.carried.items():
            k.w(f"{k.val(i)} = {k.val(self.leaves[s])}", ind)
        for val, i, at in self.reads():
            if not self.ahead:
                k.w(f"{val} = tl.load({at.format(s='s')})", ind)
                continue
            k.w(f"{val} = {k.nxt(i)}", ind)
            for d in range(1, self.ahead):
                k.w(f"{k.nxt(i, d - 1)} = {k.nxt(i, d)}", ind)
            at = at.format(s=f"s - {self.ahead}")
            k.w(f"{k.nxt(i, self.ahead - 1)} = tl.load({at}, mask=z0 + s > {self.ahead - 1}, other=0.0)", ind)


def _bwd_launcher(
    cell: Cell, plan: Plan, name: str, py: PyNames, sig: Signature, stash, y_name, saved
) -> list:
    """``saved``: the Python names of what the forward keeps for the backward (``fused.saved_names``)."""
    states, first = list(cell.states), py(("t", next(iter(cell.inputs))), "")
    k = tidy_kernel(cell, cell.graph, plan, py, {})
    history = keeps_history(plan)
    params = [*_inputs(cell, py, k), *saved, py(("d", y_name), ""), *(py(("dht", s), "") for s in states)]
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
    if not history:
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
