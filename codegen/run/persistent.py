"""The persistent dense recurrence at run time: a step that mixes the whole state through learned
matrices (``sum[j](W_h * h[j])`` in E1, E10, E63, LSTM, GRU) runs as ONE forward and ONE backward
launch over the whole sequence instead of a GEMM and a kernel launch per step.

Where it applies: ``codegen/analysis.py`` (``dense_layout``); the grid and its blocks:
``codegen/plan.py`` (``make_dense_plan``, ``PersistentPlan``); the module's source, kernels and
launchers: ``codegen/emit/persistent.py`` and ``persistent_api.py``; the custom op: ``codegen/run/ops.py``,
which calls the module's launchers.

Each step every program stores its rows of the new state and arrives at a grid barrier: an atomic
counter (release) that every program then waits on (acquire) before the next step reads the state.
All programs must be resident at once, so the grid is launched persistently only when it fits on the
GPU's SMs. The matrices' gradients are one GEMM per matrix over all steps, in PyTorch, after the
backward kernel.

Both kernels take the step range ``[t_lo, t_hi)`` at run time. Triton's CPU interpreter runs the
programs of a launch one after another, so a spinning barrier would never release there; it (and a
grid too large to be resident) launches one step per call instead, and the launch boundary is the
barrier. The same kernel source runs both ways; the sequence length is a run-time argument.
Otherwise (no persistent layout) ``DenseCell`` is the fallback.

A cell that has the layout only after ``codegen/rewrite.py``'s rewrites (E42, E66) runs the rewritten
cell: its hoisted values (a per-token GEMM, a folded matrix) are computed first, in torch
(``codegen/run/rewritten.py``), and passed to the kernels as inputs and constants.
"""

from __future__ import annotations

import functools

import torch
from archdsl.codegen.analysis import (
    DenseLayout,
    PersistentForm,
    dense_layout,
    persistent_form,
    step_cell,
    step_inputs,
)
from archdsl.codegen.emit.names import module_name
from archdsl.codegen.emit.persistent import emit_module
from archdsl.codegen.plan import PersistentPlan, make_dense_plan, persistent_rows
from archdsl.codegen.run.ops import persistent_op
from archdsl.codegen.run.rewritten import Hoisted
from archdsl.codegen.run.runtime import load_module

from archdsl.autodiff import Cell, derive_backward
from archdsl.ir import LayerIR


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
            *(("rewritten", note) for note in (self.rewrite.notes if self.rewrite else ())),
        ]

    def __init__(self, layer: LayerIR, form: PersistentForm, rows=None, warps=None, block_k=128, early=True):
        cell, matvecs, lay = form.cell, form.matvecs, form.layout
        self.cell, self.matvecs, self.lay, self.rewrite = cell, matvecs, lay, form.rewrite
        self.hoisted = Hoisted(form.rewrite) if form.rewrite else None
        self.step = step_cell(cell, matvecs)
        self.bwd = derive_backward(self.step)
        D = cell.sizes[lay.rows]
        rows = persistent_rows(D, rows)
        warps = warps or 8
        kplan = make_dense_plan(cell, self.step, lay.rows, rows, warps)
        self.kplan = kplan
        self.plan = PersistentPlan(lay.rows, rows, kplan.tiles[lay.rows], warps, block_k, D)
        matrices = [m.const for m in matvecs]
        source = emit_module(layer, cell, self.step, self.bwd, lay, kplan, matrices, block_k, early)
        self.stem = module_name(layer.name)
        self.kernels, self.hash, self.path = load_module(
            source, self.stem + "_persistent", f"{layer.name} (persistent strategy)"
        )
        self.input_names, self.const_names = step_inputs(self.step)
        self.state_names = list(cell.states)
        self.operands = sorted(set(lay.operand))
        self.key = f"{self.hash}_{rows}_{warps}_{block_k}"  # the custom op's name (one per key)

    # ---- the public call ------------------------------------------------------------------------
    def __call__(self, inputs, frontier, state0=None):
        cell = self.cell
        if self.hoisted is not None:
            inputs, frontier = self.hoisted(inputs, frontier)
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
        """The cell as a ``torch.library`` custom op: one per key (source hash and launch settings)."""
        return persistent_op(self)

    @property
    def last_sync(self) -> list[torch.Tensor]:
        """The barrier counters of the last persistent launches (empty after stepped launches)."""
        return list(self.kernels.LAST_SYNC)

    def check_barriers(self) -> None:
        """Raise if a grid barrier of the last launches gave up waiting (programs not co-resident)."""
        for s in self.last_sync:
            if int(s[1].item()) != 0:
                raise RuntimeError("a persistent kernel's grid barrier timed out (programs not co-resident)")

    # ---- the module's launchers ----------------------------------------------------------------
    def forward(self, xs, cs, ws, h0):
        """-> y, the final states, and what the backward reads: hs, hv, mv."""
        return getattr(self.kernels, f"{self.stem}_persistent_fwd")(xs, cs, ws, h0)

    def backward(self, xs, cs, ws, hs, hv, mv, dy, dht):
        """-> the gradients of xs, cs, ws and of the initial states."""
        return getattr(self.kernels, f"{self.stem}_persistent_bwd")(xs, cs, ws, hs, hv, mv, dy, dht)


def build_persistent(layer: LayerIR, cell: Cell, rows=None, warps=None, block_k=128, early=True):
    """A ``PersistentCell`` when the layout applies to the cell or its rewrite, else None (the caller
    falls back).

    ``rows``: state rows per program (a power of two >= 16; default: the smallest that needs at most
    ``MAX_TILES`` programs per batch block); ``warps`` per program (default 8); ``block_k``: columns
    per ``tl.dot`` in the contraction loop (at most; narrower for batch blocks over 64); ``early``:
    issue each step's own loads before the grid barrier rather than after it."""
    form = persistent_form(cell)
    if form is None:
        return None
    return PersistentCell(layer, form, rows, warps, block_k, early)


__all__ = ["DenseLayout", "PersistentCell", "build_persistent", "dense_layout"]
