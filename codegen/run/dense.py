"""Dense recurrent matmul: for a step that mixes the whole state through a learned matrix
(``sum[j](W_h * h[j])`` in E1, LSTM, GRU …), run that contraction as one GEMM per step (cuBLAS) and
everything else of the step as one fused Triton kernel, instead of holding a ``d x d`` matrix in the
registers of every program.

The *step cell* (``codegen/analysis.py``) is the cell with each such contraction replaced by an input
``mv<k>``; it compiles with the same passes as any cell (derived backward included) and runs one step
per launch. The operands of the contractions are evaluated from the state by the reference's rules,
and autograd chains the GEMMs, the operands and the step kernel's derived backward.

``DenseCell`` is the fallback: where every contraction reads a state renamed onto the contracted axis
and the step cell is pointwise over the state's rows, ``codegen/run/persistent.py`` runs the whole
sequence as one persistent forward and one backward launch instead (E1, E10, E63, LSTM, GRU; E42 and
E66 after ``codegen/rewrite.py``'s linear rewrites). Forced by name, it runs the cell as written.
"""

from __future__ import annotations

import string

import torch
from archdsl.codegen.analysis import MatVec, find_matvecs, mv_name, step_cell

from archdsl.autodiff import Cell
from archdsl.ir import Op
from archdsl.reference import Layout, evaluate


class DenseCell:
    """``(inputs, frontier, state0) -> (y, final states)``: per step, GEMMs then the step kernel."""

    strategy = "dense"

    def describe(self) -> list[tuple[str, str]]:
        mats = ", ".join(f"{m.const}[{', '.join(self.cell.consts[m.const])}]" for m in self.matvecs)
        return [("contractions", f"{mats}: one GEMM per step (cuBLAS)"), *self.step.describe()]

    def __init__(self, cell: Cell, matvecs: list[MatVec], step):
        self.cell, self.matvecs, self.step = cell, matvecs, step
        self.plan, self.hash, self.path = step.plan, step.hash, step.path
        self.operand_order = sorted(cell.graph.ancestors([m.operand for m in matvecs]))
        self.layout = Layout(cell)
        letters = dict(zip(cell.axes, string.ascii_lowercase[1:]))
        self.equations = []
        for m in matvecs:
            v_ax = "".join(letters[a] for a in cell.graph[m.operand].axes)
            w_ax = "".join(letters[a] for a in cell.consts[m.const])
            out = "".join(letters[a] for a in cell.graph[m.node].axes)
            self.equations.append(f"a{v_ax},{w_ax}->a{out}")

    def __call__(self, inputs, frontier, state0=None):
        cell = self.cell
        x0 = next(iter(inputs.values()))
        B, T = x0.shape[:2]
        consts = {c: frontier[src] for c, src in cell.const_source.items()}
        state = {s: (state0 or {}).get(s) for s in cell.states}
        state = {
            s: v.float()
            if v is not None
            else x0.new_zeros(B, *(cell.sizes[a] for a in cell.states[s]), dtype=torch.float32)
            for s, v in state.items()
        }
        step_front = {src: frontier[src] for c, src in self.step.cell.const_source.items()}
        layout = Layout(cell, torch.float32, x0.device)
        ys = []
        for t in range(T):

            def leaf(i, node, t=t, state=state):
                if node.op is Op.STATE:
                    return layout.full(state[node.attr], node.axes, 1)
                if node.op is Op.INPUT:
                    return layout.full(inputs[node.attr][:, t].float(), node.axes, 1)
                return layout.full(consts[node.attr].float(), node.axes, 0)

            env = evaluate(cell, self.operand_order, {}, leaf, layout)
            step_in = {n: inputs[n][:, t : t + 1] for n in self.step.cell.inputs if n in inputs}
            for k, (m, eq) in enumerate(zip(self.matvecs, self.equations)):
                v = layout.compact(env[m.operand], cell.graph[m.operand].axes, (B,))
                z = torch.einsum(eq, v.to(x0.dtype), consts[m.const].to(x0.dtype))
                step_in[mv_name(k)] = z[:, None]
            y, state = self.step(step_in, step_front, state)
            ys.append(y)
        return torch.cat(ys, dim=1), state


__all__ = ["DenseCell", "MatVec", "find_matvecs", "mv_name", "step_cell"]
