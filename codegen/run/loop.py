"""The fused sequential loop: one program per (batch element, tile of the split axes) holds its slice
of the state in registers for the whole sequence; the per-token part of the step runs before it and
a readout that mixes a split axis after it, each in parallel kernels of the same module."""

from __future__ import annotations

from archdsl.codegen.emit.module import emit_module
from archdsl.codegen.emit.names import module_name
from archdsl.codegen.hoist import hoist, split_readout
from archdsl.codegen.plan import make_plan, make_token_plan
from archdsl.codegen.run.runtime import CompiledCell, HoistedCell, ParallelPart, load_module

from archdsl.autodiff import Cell, derive_backward
from archdsl.ir import LayerIR

CHECKPOINT_DEFAULT = 16  # the backward's checkpoint stride


def build_loop(layer: LayerIR, cell: Cell, opts, parts: bool = True):
    """``opts``: a ``strategies.Options``; ``parts``: cut off the per-token part and the readout
    (False for a step cell that runs one step per launch)."""
    whole = cell
    around = {}
    if parts:
        readout, loop = split_readout(cell)  # a readout that mixes a splittable axis: after the loop
        token, cell = hoist(loop)  # per-token values: before the loop
        around = {k: p for k, p in {"token": token, "readout": readout}.items() if p is not None}
    backward = derive_backward(cell)
    plan = make_plan(cell, chunk=opts.chunk or CHECKPOINT_DEFAULT, tile=opts.tile, num_warps=opts.num_warps)
    part_plans = [(k, p, make_token_plan(p.axes, p.sizes, p.graph)) for k, p in around.items()]
    source = emit_module(layer, cell, backward, plan, part_plans)
    stem = module_name(layer.name)
    label = f"{layer.name} ({'loop' if parts else 'dense'} strategy)"
    module, digest, path = load_module(source, stem, label)
    compiled = CompiledCell(cell, backward, plan, module, digest, path, stem)
    if not part_plans:
        return compiled
    # the readout writes the layer's output in a 16-bit layer's type (no copy after it); the per-token
    # values the loop reads stay fp32
    narrow = {"readout": frozenset(around["readout"].outputs)} if "readout" in around else {}
    kernels = {
        k: ParallelPart(k, p, pp, module, digest, stem, narrow.get(k, frozenset())) for k, p, pp in part_plans
    }
    return HoistedCell(compiled, whole, kernels.get("token"), kernels.get("readout"))
