"""Max-plus states: a state updated as ``s' = max(a + s, b)`` is a prefix scan, not a recurrence.

With ``a``, ``b`` per-token values that read no state (``Kind`` TOKEN or CONST), unrolling gives

    s_t = L_t + max(s_0, max_{τ ≤ t} (b_τ - L_τ)),      L_t = Σ_{τ ≤ t} a_τ,

a cumulative sum and a cumulative maximum over time (``codegen/run/maxplus_scan.py`` computes them
in PyTorch before the recurrence; autograd differentiates them). For the rest of the cell the old and
new values of such a state are then per-token inputs, ``s_{t-1}`` and ``s_t``: mLSTM's stabiliser
``m' = max(lf + m, ig)`` turns its decay ``exp(lf + m - m')`` and write strength ``exp(ig - m')``
into per-token coefficients, and what is left is linear (``codegen/linear.py``).

A state whose ``a`` or ``b`` reads a state is left alone, so is one updated any other way. The rule
applies again to the cell it rewrote, so that a max-plus state whose ``a`` reads another max-plus
state is a second scan, run after the first. No torch here: ``archdsl compile`` classifies without it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from archdsl.codegen.hoist import replace_with_inputs

from archdsl.autodiff import Cell
from archdsl.ir import Kind, Op


@dataclass(frozen=True)
class MaxPlus:
    """The state ``state`` updated as ``max(a + s, b)``: ``a``, ``b`` nodes of ``cell``'s graph (the
    cell before this scan's rewrite), ``prev``, ``new`` the names of the inputs that replace ``s`` and
    ``s'`` in the cell after it."""

    cell: Cell
    state: str
    a: int
    b: int
    prev: str
    new: str


def _max_plus_args(cell: Cell, state: str) -> tuple[int, int] | None:
    """(a, b) when the state's update is ``max(a + s, b)`` (either order of either op) with ``a`` and
    ``b`` reading no state, else None."""
    g, kinds = cell.graph, cell.graph.kinds()
    n = g[cell.next_state[state]]
    if n.op is not Op.MAXIMUM:
        return None
    for plus, b in (n.args, n.args[::-1]):
        p = g[plus]
        if p.op is not Op.ADD:
            continue
        for s, a in (p.args, p.args[::-1]):
            own = g[s].op is Op.STATE and g[s].attr == state
            if own and kinds[a] != Kind.RECURRENT and kinds[b] != Kind.RECURRENT:
                return a, b
    return None


def _fresh(stem: str, taken: set) -> str:
    name = stem
    while name in taken:
        name += "_"
    return name


def max_plus_states(cell: Cell) -> tuple[Cell, tuple[MaxPlus, ...]]:
    """(the cell with every max-plus state's old and new values as per-token inputs and the state
    gone, the scans in the order they run); (cell, ()) when there is none."""
    scans: list[MaxPlus] = []
    while True:
        found = next(((s, ab) for s in cell.states if (ab := _max_plus_args(cell, s))), None)
        if found is None:
            return cell, tuple(scans)
        state, (a, b) = found
        g = cell.graph
        taken = {*cell.inputs, *cell.consts, *cell.states, *cell.names.values()}
        prev = _fresh(f"{state}:prev", taken)
        new = _fresh(f"{state}:new", taken | {prev})
        old = next(i for i, n in enumerate(g.nodes) if n.op is Op.STATE and n.attr == state)
        rest = dataclasses.replace(
            cell,
            states={s: ax for s, ax in cell.states.items() if s != state},
            next_state={s: i for s, i in cell.next_state.items() if s != state},
        )
        scans.append(MaxPlus(cell, state, a, b, prev, new))
        cell = replace_with_inputs(rest, {old: prev, cell.next_state[state]: new})
