"""The persistent dense recurrence at run time: a step that mixes the whole state through learned
matrices (``sum[j](W_h * h[j])`` in E1, E10, E63, LSTM, GRU) runs as ONE forward and ONE backward
launch over the whole sequence instead of a GEMM and a kernel launch per step.

Where it applies: ``codegen/analysis.py`` (``dense_layout``); the grid and its blocks:
``codegen/plan.py`` (``make_dense_plan``, ``PersistentPlan``); the kernels' source:
``codegen/emit/persistent.py``; the custom op: ``codegen/run/ops.py``.

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
"""

from __future__ import annotations

import functools
import os

import torch
import triton.language as tl
from archdsl.codegen.analysis import DenseLayout, MatVec, dense_layout, step_cell, step_inputs
from archdsl.codegen.emit.names import module_name
from archdsl.codegen.emit.persistent import emit_module
from archdsl.codegen.plan import PersistentPlan, make_dense_plan, persistent_rows
from archdsl.codegen.run.ops import persistent_op
from archdsl.codegen.run.runtime import load_module

from archdsl.autodiff import Cell, derive_backward
from archdsl.ir import LayerIR

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
        rows = persistent_rows(D, rows)
        warps = warps or 8
        kplan = make_dense_plan(cell, self.step, lay.rows, rows, warps)
        self.kplan = kplan
        self.plan = PersistentPlan(lay.rows, rows, kplan.tiles[lay.rows], warps, block_k, D)
        source = emit_module(layer, self.step, self.bwd, lay, kplan, len(matvecs), early)
        self.kernels, self.hash, self.path = load_module(
            source, module_name(layer.name) + "_persistent", f"{layer.name} (persistent strategy)"
        )
        self.input_names, self.const_names = step_inputs(self.step)
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
        """The cell as a ``torch.library`` custom op: one per key (source hash and launch settings)."""
        return persistent_op(self)

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


_SYNC: dict[str, list[torch.Tensor]] = {}  # op key -> barrier counters of its last launches


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


__all__ = ["DenseLayout", "PersistentCell", "build_persistent", "dense_layout"]
