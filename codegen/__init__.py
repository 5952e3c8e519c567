"""The compiler: a checked layer's recurrence -> a fused Triton forward and backward kernel.

``compile_cell`` reads top to bottom as named passes::

    cell     = extract_cell(layer)          # cut the recurrence out; parameter-only values become inputs
    backward = derive_backward(cell)        # VJP per op, one backward step
    plan     = make_plan(cell, ...)         # strategy, split axes, blocks, grid, checkpoint stride
    source   = emit_module(...)             # readable Triton source
    module   = load_module(source)          # cached on disk under its hash, imported
"""

from __future__ import annotations

from archdsl.autodiff import derive_backward, extract_cell
from archdsl.ir import LayerIR

from .plan import Plan, make_plan
from .source import emit_module


def compile_cell(layer: LayerIR, chunk: int = 16, tile: int | None = None):
    from .runtime import CompiledCell, load_module

    cell = extract_cell(layer)
    backward = derive_backward(cell)
    plan = make_plan(cell, chunk=chunk, tile=tile)
    source = emit_module(layer, cell, backward, plan)
    module, digest, path = load_module(source, layer.name)
    return CompiledCell(cell, backward, plan, module, digest, path)


__all__ = ["Plan", "compile_cell", "emit_module", "make_plan"]
