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

from .dense import DenseCell, find_matvecs, step_cell
from .hoist import hoist, split_readout
from .plan import Plan, make_plan, make_token_plan
from .source import emit_module


def compile_cell(
    layer: LayerIR,
    chunk: int = 16,
    tile: int | None = None,
    num_warps: int | None = None,
    strategy: str | None = None,
):
    """The layer's cell as a callable ``(inputs, frontier, state0) -> (y, final states)``.

    ``chunk``: checkpoint stride C of the backward (extra memory O(B * state * T / C)).
    ``strategy="chunked"``: the chunked tensor-core form for state-linear recurrences
    (``codegen/chunked.py``), ``chunk`` then its chunk size; ValueError when it does not apply.
    ``tile``/``num_warps``: the block of the split axis and the warps per program; when both are
    None they are measured on the first CUDA call (``codegen/tune.py``)."""
    if strategy == "chunked":  # chunked linear recurrences (codegen/chunked.py); chunk = its chunk size
        from .chunked import build_chunked

        return build_chunked(layer, chunk)
    if tile is None and num_warps is None:
        from .tune import TunedCell

        return TunedCell(layer, chunk, build_cell)
    return build_cell(layer, chunk, tile, num_warps)


def build_cell(layer: LayerIR, chunk: int, tile: int | None, num_warps: int | None):
    cell = extract_cell(layer)
    matvecs = find_matvecs(cell, make_plan(cell).block)
    if matvecs:  # a large learned matrix mixes the state
        from .persistent import build_persistent

        persistent = build_persistent(layer, cell, matvecs, tile, num_warps)
        if persistent is not None:  # matrices x state in-kernel, one launch over the sequence
            return persistent
        step = _build(layer, step_cell(cell, matvecs), 1, tile, num_warps)  # GEMM per step + step kernel
        return DenseCell(cell, matvecs, step)
    readout, loop = split_readout(cell)  # a readout that mixes a splittable axis: after the loop
    token, core = hoist(loop)  # per-token values: before the loop
    return _build(layer, core, chunk, tile, num_warps, {"token": token, "readout": readout}, cell)


def _build(layer: LayerIR, cell, chunk: int, tile: int | None, num_warps: int | None, parts=None, whole=None):
    """``parts``: the stateless parts around the loop by kind (None values skipped)."""
    from .runtime import CompiledCell, HoistedCell, ParallelPart, load_module

    backward = derive_backward(cell)
    plan = make_plan(cell, chunk=chunk, tile=tile, num_warps=num_warps)
    parts = [
        (k, p, make_token_plan(p.axes, p.sizes, p.graph)) for k, p in (parts or {}).items() if p is not None
    ]
    source = emit_module(layer, cell, backward, plan, parts)
    module, digest, path = load_module(source, layer.name)
    compiled = CompiledCell(cell, backward, plan, module, digest, path)
    if not parts:
        return compiled
    around = {k: ParallelPart(k, p, pp, module, digest) for k, p, pp in parts}
    return HoistedCell(compiled, whole, around.get("token"), around.get("readout"))


__all__ = ["Plan", "build_cell", "compile_cell", "emit_module", "make_plan"]
