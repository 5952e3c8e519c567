"""The chunked class of a whole cell: its max-plus states as scans over time (``codegen/maxplus.py``),
one linear form per remaining state (``codegen/linear.py``), and the readout parts that run after the
chunked ops. ``classify`` answers with the form or the reason the cell stays sequential, which
``archdsl compile`` prints (``classification``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from archdsl.codegen.hoist import TokenPart, replace_with_inputs, split_readout
from archdsl.codegen.linear import (
    LinearForm,
    NotLinear,
    ReadoutNotLinear,
    _Builder,
    _key_axis,
    _linear_form,
    _reads,
)
from archdsl.codegen.maxplus import MaxPlus, max_plus_states

from archdsl.autodiff import Cell, extract_cell
from archdsl.ir import Graph, Kind, LayerIR, Op


@dataclass(frozen=True)
class ChunkedForm:
    """What the chunked strategy runs for a cell: the max-plus scans before the recurrence
    (``codegen/maxplus.py``), one chunked op per linear state, and the readout parts after them.

    ``readouts``: (TokenPart, wiring) in the order they run; wiring maps each input of the part that
    the ops hand over to the state whose form's output (``g ⊙ o + p``) it reads, or to None for the
    output ``y`` of the part before it."""

    cell: Cell  # after the scans: the max-plus states' old and new values are per-token inputs
    scans: tuple[MaxPlus, ...]
    forms: tuple[LinearForm, ...]
    readouts: tuple[tuple[TokenPart, dict[str, str | None]], ...]

    @property
    def key_size(self) -> int:
        """The smallest key axis of the forms (what decides whether the strategy is chosen unnamed)."""
        return min(f.cell.sizes[f.key] for f in self.forms)

    def describe(self) -> str:
        scans = "".join(f"max-plus scan of {m.state} (a cumsum and a cummax over time); " for m in self.scans)
        forms = "; ".join(f.describe().removeprefix("chunked: ") for f in self.forms)
        return f"chunked: {scans}{forms}"


def classify(cell: Cell) -> ChunkedForm | str:
    """The chunked form of the cell when it is in the class, else the reason it is not (``"tanh around
    the update: sequential loop"``).

    Max-plus states first become scans over time (``max_plus_states``). One linear state left: the
    readout parts run in order after its op; when the readout is not linear in the new state (E74's
    self-gate ``sg(Sᵀq)``), the loop stops at the last linear contraction through which alone the
    readout reads the state. Several: ``_several``."""
    cell, scans = max_plus_states(cell)
    if not cell.states:
        return "every state is a max-plus scan: no linear state left for the chunked op"
    try:
        if len(cell.states) > 1:
            forms, readouts = _several(cell)
        else:
            forms, readouts = _one(cell)
    except NotLinear as e:
        return str(e)
    return ChunkedForm(cell, scans, forms, readouts)


def _one(cell: Cell) -> tuple[tuple[LinearForm], tuple]:
    (state,) = cell.states
    readout, loop = split_readout(cell)
    parts = [(readout, _loop_input(readout, cell))] if readout is not None else []
    try:
        form = _linear_form(loop)
    except ReadoutNotLinear as e:
        reason = str(e)
        for part, inner in _readout_cuts(loop):
            try:
                form = _linear_form(inner)
            except ReadoutNotLinear:
                continue
            except NotLinear as e:  # the readout was the first obstacle, not the last
                reason = str(e)
                continue
            parts = [(part, _loop_input(part, loop)), *parts]
            break
        else:
            raise NotLinear(reason) from None
    wiring = [(p, {name: state if k == 0 else None}) for k, (p, name) in enumerate(parts)]
    return (_with_sums(form, cell),), tuple(wiring)


def _with_sums(form: LinearForm, cell: Cell) -> LinearForm:
    """``form`` with the head axes that the cell's output lacks (the readout sums over them)."""
    return dataclasses.replace(form, summed=tuple(a for a in form.heads if a not in cell.output_axes))


def _several(cell: Cell) -> tuple[tuple[LinearForm, ...], tuple]:
    """Several linear states: one chunked op each (with its own decay, key, value and query), the
    readout cut at the latest value through which alone it reads each state and that is a linear
    contraction of it, the rest one part after the ops.

    States that share their decay, key and query (mLSTM's C and its normaliser, a column of ones
    beside C's values) could share one op with a wider value axis; one op per state is the simpler
    rule that also takes states of different decays, at the price of the second op's intra-chunk
    products (``[C, C]`` per chunk and head, as for the first) for one value column."""
    g = cell.graph
    for s, i in cell.next_state.items():
        others = [t for t in cell.states if t != s and _reads(g, i, t)]
        if others:
            raise NotLinear(f"the update of {s} reads the state {others[0]}: not linear in one state")
    b = _Builder(cell)
    forms, cuts = [], {}
    for s in cell.states:
        reason = f"the readout does not read the state {s} through a contraction of it alone"
        for n in _cuts_of(cell, s):
            sub = dataclasses.replace(
                cell,
                states={s: cell.states[s]},
                next_state={s: cell.next_state[s]},
                output=n,
                output_axes=g[n].axes,
            )
            try:
                forms.append(_with_sums(_linear_form(sub, b, f"o:{s}"), cell))
            except ReadoutNotLinear:
                continue
            except NotLinear as e:
                reason = str(e)
                continue
            cuts[n] = f"y:{s}"
            break
        else:
            raise NotLinear(reason)
    epi = replace_with_inputs(cell, cuts, stateless=True)
    part = TokenPart.of(cell, epi.graph, epi.inputs, epi.consts, {"y": epi.output}, epi.names)
    return tuple(forms), ((part, {name: name.removeprefix("y:") for name in cuts.values()}),)


def _cuts_of(cell: Cell, state: str):
    """The state-dependent values without the state's key axis that read ``state`` and no other, and
    through which alone the readout reads it, latest first."""
    g, kinds = cell.graph, cell.graph.kinds()
    key = _key_axis(cell, state)
    for n in sorted(g.ancestors([cell.output]), reverse=True):
        if kinds[n] != Kind.RECURRENT or key in g[n].axes:
            continue
        if any(_reads(g, n, t) != (t == state) for t in cell.states):
            continue
        if _reads_apart(g, cell.output, n, state):
            continue  # the readout also reads the state some other way
        yield n


def _reads_apart(g: Graph, root: int, cut: int, state: str) -> bool:
    """Does ``root`` read ``state`` other than through ``cut``?"""
    return any(g[i].op is Op.STATE and g[i].attr == state for i in g.ancestors([root], stop={cut}))


def _loop_input(part: TokenPart, cell: Cell) -> str:
    """The input of a readout part that the loop hands it (the one that is no input of ``cell``)."""
    return next(n for n in part.inputs if n not in cell.inputs)


def _readout_cuts(loop: Cell):
    """(readout part, loop cut there) at each state-dependent value without the key axis through which
    alone the readout reads the state, latest first."""
    g, kinds = loop.graph, loop.graph.kinds()
    key = _key_axis(loop)
    for n in sorted(g.ancestors([loop.output]) - {loop.output}, reverse=True):
        if kinds[n] != Kind.RECURRENT or key in g[n].axes:
            continue
        if any(g[i].op is Op.STATE for i in g.ancestors([loop.output], stop={n})):
            continue  # the readout also reads the state some other way
        name = "o:" + str(n)
        epi = replace_with_inputs(loop, {n: name}, stateless=True)
        part = TokenPart.of(loop, epi.graph, epi.inputs, epi.consts, {"y": epi.output})
        yield part, replace_with_inputs(dataclasses.replace(loop, output=n, output_axes=g[n].axes), {})


def classification(layer: LayerIR) -> str:
    """The line ``archdsl compile`` prints: the chunked form, or why the layer stays sequential."""
    got = classify(extract_cell(layer))
    return got if isinstance(got, str) else got.describe()
