"""Dense recurrences: the contractions of a learned matrix with the state, and their layouts.

A step that mixes the whole state through a learned matrix (``sum[j](W_h * h[j])`` in E1, E10, E63,
LSTM, GRU) holds a ``d x d`` block that no program's registers can keep once ``d`` grows.
``find_matvecs`` finds those contractions; the *step cell* is the cell with each of them replaced
by a per-step input ``mv:<k>``, which compiles like any cell (derived backward included).

``dense_layout`` says whether the contractions fit the persistent grid (``codegen/run/persistent.py``):
every contraction's operand is a state renamed onto the contracted axis (``h[j]``), the state has
exactly the rows' axis, and the step cell is pointwise over that axis (it never sums over it or
renames it, and every state and the readout carry it). ``persistent_form`` tries the cell as written,
then its linear rewrite (``codegen/rewrite.py``: a state-free addend of an operand hoisted, a chain
through parameter-only matrices folded into one). Otherwise the dense fallback
(``codegen/run/dense.py``) runs each contraction as a GEMM per step. Text and IR only: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from archdsl.codegen.hoist import replace_with_inputs
from archdsl.codegen.plan import live_nodes, make_plan, splittable_axes
from archdsl.codegen.rewrite import Rewrite, rewrite

from archdsl.autodiff import Cell
from archdsl.ir import Kind, Op

#: a learned matrix whose padded register block would exceed this many floats goes to a GEMM
REGISTER_LIMIT = 64 * 64


@dataclass(frozen=True)
class MatVec:
    node: int  # the SUM node in the cell graph
    operand: int  # the state-dependent factor
    const: str  # the matrix (a parameter-only value, c<k>)
    axis: str  # the contracted axis


def find_matvecs(cell: Cell, block: dict) -> list[MatVec]:
    """Contractions of a large learned matrix with a value that depends on the state."""
    g, kinds = cell.graph, cell.graph.kinds()
    out = []
    for i, n in enumerate(g.nodes):
        if n.op is not Op.SUM or g[n.args[0]].op is not Op.MUL:
            continue
        a, b = g[n.args[0]].args
        for w, v in ((a, b), (b, a)):
            wn = g[w]
            if wn.op is Op.PARAM and len(wn.axes) == 2 and n.attr in wn.axes and kinds[v] == Kind.RECURRENT:
                if block[wn.axes[0]] * block[wn.axes[1]] > REGISTER_LIMIT:
                    out.append(MatVec(i, v, wn.attr, n.attr))
                break
    return out


def mv_name(k: int) -> str:
    """The step cell's input that replaces contraction ``k`` (``mv:k``: no spec name has a colon)."""
    return f"mv:{k}"


def step_cell(cell: Cell, matvecs: list[MatVec]) -> Cell:
    """The cell with each contraction replaced by a per-step input ``mv:<k>``."""
    return replace_with_inputs(cell, {m.node: mv_name(k) for k, m in enumerate(matvecs)})


def step_inputs(step: Cell) -> tuple[list[str], list[str]]:
    """The step's per-token inputs (not the contractions ``mv:<k>``, which the persistent kernels
    compute) and constants."""
    mv = {mv_name(m) for m in range(len(step.inputs))}
    return [n for n in step.inputs if n not in mv], list(step.consts)


@dataclass(frozen=True)
class DenseLayout:
    """How the contractions map onto the persistent grid."""

    rows: str  # the state axis tiled across programs (the rows of every matrix)
    operand: tuple[str, ...]  # per matvec: the state it reads (renamed onto the contracted axis)
    contracted: tuple[str, ...]  # per matvec: the contracted axis
    row_major: tuple[bool, ...]  # per matvec: the matrix's axes are (rows, contracted) in layout order


def live_axes(cell: Cell) -> set[str]:
    """The axes of the nodes the step needs (a step cell still holds the replaced contractions' dead
    operands)."""
    return {a for i in live_nodes(cell) for a in cell.graph[i].axes}


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
    if rows not in splittable_axes(step):
        return None
    if live_axes(step) & set(contracted):
        return None  # the rest of the step would need whole rows of the contracted axis
    return DenseLayout(rows, tuple(operands), tuple(contracted), tuple(row_major))


@dataclass(frozen=True)
class PersistentForm:
    """What the persistent kernels compute: the cell as written, or its rewrite."""

    cell: Cell
    matvecs: list[MatVec]
    layout: DenseLayout
    rewrite: Rewrite | None  # the values computed before the recurrence; None: the cell as written


def persistent_form(cell: Cell) -> PersistentForm | None:
    """The persistent form of a dense cell (one with a contraction too large for the registers), as
    written or rewritten; None when neither has the persistent layout."""
    matvecs = find_matvecs(cell, make_plan(cell).block)
    if not matvecs:
        return None
    lay = dense_layout(cell, matvecs, step_cell(cell, matvecs))
    if lay is not None:
        return PersistentForm(cell, matvecs, lay, None)
    rw = rewrite(cell)
    if rw is None:
        return None
    matvecs = find_matvecs(rw.cell, make_plan(rw.cell).block)
    lay = dense_layout(rw.cell, matvecs, step_cell(rw.cell, matvecs))
    return None if lay is None else PersistentForm(rw.cell, matvecs, lay, rw)


__all__ = [
    "DenseLayout",
    "MatVec",
    "PersistentForm",
    "dense_layout",
    "find_matvecs",
    "live_axes",
    "mv_name",
    "persistent_form",
    "step_cell",
    "step_inputs",
]
