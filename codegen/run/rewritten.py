"""The values that ``codegen/rewrite.py`` moves out of the recurrence, computed in torch before it.

A per-token contraction (``sum[j](W * u[j])`` split off E42's operand) is one GEMM over every token
of the batch, in the inputs' dtype like the dense strategy's per-step GEMMs; a parameter-only one
(E66's ``sum[r](U * V)``) is one matrix product per forward, in fp32 like every constant. Everything
else on the way (``u = silu(xt)``) is evaluated by the reference's rules. Autograd through these ops
carries the gradients that the persistent kernels return for the hoisted values on to the spec's
inputs and parameters (dW, dU, dV).
"""

from __future__ import annotations

import string

import torch
from archdsl.codegen.rewrite import Rewrite

from archdsl.ir import Kind, Op
from archdsl.reference import Layout, apply, compute_dtype

BATCH = "BT"  # einsum letters of the batch and time dimensions (the axes take lowercase ones)


class Hoisted:
    """``(inputs, frontier) -> (inputs, frontier)`` with the rewritten cell's new leaves added."""

    def __init__(self, rw: Rewrite):
        self.rw = rw
        self.kinds = rw.graph.kinds()
        self.letters = dict(zip(rw.cell.axes, string.ascii_lowercase))

    def __call__(self, inputs: dict, frontier: dict) -> tuple[dict, dict]:
        x0 = next(iter(inputs.values()))
        layout = Layout(self.rw.cell, compute_dtype(x0), x0.device)
        env: dict[int, torch.Tensor] = {}
        inputs, frontier = dict(inputs), dict(frontier)
        for name, i in self.rw.hoisted.items():
            if self.kinds[i] == Kind.CONST:
                frontier[name] = layout.compact(
                    self._value(i, env, inputs, frontier, layout), self.axes(i), ()
                )
            else:
                v = self._value(i, env, inputs, frontier, layout, x0.dtype)
                inputs[name] = layout.compact(v, self.axes(i), tuple(x0.shape[:2])).to(x0.dtype)
        return inputs, frontier

    def axes(self, i: int) -> tuple[str, ...]:
        return self.rw.graph[i].axes

    def _value(self, i, env, inputs, frontier, layout, gemm_dtype=None) -> torch.Tensor:
        """Node ``i`` in the reference's full layout (batch and time first where it is per token)."""
        if i in env:
            return env[i]
        g, n = self.rw.graph, self.rw.graph[i]
        if n.op is Op.INPUT:
            env[i] = layout.full(inputs[n.attr].to(layout.dtype), n.axes, 2)
        elif n.op is Op.PARAM:
            env[i] = layout.full(frontier[self.rw.sources[n.attr]].to(layout.dtype), n.axes, 0)
        elif n.op is Op.CONST:
            env[i] = torch.tensor(n.attr, dtype=layout.dtype, device=layout.device).reshape(layout.shape(()))
        elif n.op is Op.SUM and g[n.args[0]].op is Op.MUL:  # a contraction: one einsum, no broadcast
            a, b = g[n.args[0]].args
            vals = [self._value(x, env, inputs, frontier, layout, gemm_dtype) for x in (a, b)]
            env[i] = self._contract(i, (a, b), vals, layout, gemm_dtype)
        else:
            args = [self._value(x, env, inputs, frontier, layout, gemm_dtype) for x in n.args]
            env[i] = apply(n, args, layout)
        return env[i]

    def _contract(self, i, args, vals, layout, gemm_dtype) -> torch.Tensor:
        """``sum[axis](a * b)`` of two full-layout values, as an einsum of their compact forms."""
        ops = [
            layout.compact(v, self.axes(x), tuple(v.shape[: len(self._batch(x))])) for x, v in zip(args, vals)
        ]
        dt = gemm_dtype if self.kinds[i] == Kind.TOKEN and gemm_dtype is not None else layout.dtype
        out = torch.einsum(
            f"{self._word(args[0])},{self._word(args[1])}->{self._word(i)}", *(o.to(dt) for o in ops)
        )
        return layout.full(out.to(layout.dtype), self.axes(i), len(self._batch(i)))

    def _batch(self, x: int) -> str:
        return BATCH if self.kinds[x] == Kind.TOKEN else ""

    def _word(self, x: int) -> str:
        """Node ``x``'s dimensions as einsum letters."""
        return self._batch(x) + "".join(self.letters[a] for a in self.axes(x))
