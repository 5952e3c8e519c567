"""The compiler: a checked layer's recurrence -> fused Triton forward and backward kernels.

``build_cell`` reads top to bottom as named passes::

    cell     = extract_cell(layer)          # cut the recurrence out; parameter-only values become inputs
    strategy = choose(layer, cell)          # the first entry of STRATEGIES that applies (strategies.py)
    compiled = strategy.build(...)          # derive the backward (a VJP per op), plan, emit readable
                                            # Triton, cache it on disk under its hash, import it
"""

from __future__ import annotations

from archdsl.codegen.emit.module import emit_module
from archdsl.codegen.plan import Plan, make_plan
from archdsl.codegen.run.strategies import STRATEGIES, Options, applicable, check_options, choose

from archdsl.autodiff import extract_cell
from archdsl.errors import ArchdslError
from archdsl.ir import LayerIR


def compile_cell(
    layer: LayerIR,
    chunk: int | None = None,
    tile: int | None = None,
    num_warps: int | None = None,
    strategy: str | None = None,
    products: str | None = None,
):
    """The layer's cell as a callable ``(inputs, frontier, state0) -> (y, final states)``.

    ``chunk``: steps per block, None for the strategy's default: the loop's checkpoint stride C (16;
    the backward keeps O(B * state * T / C)), the chunked form's chunk (64, a power of two >= 16).
    ``tile``/``num_warps``: the block of the split axis and the warps per program; when both are
    None and the strategy is tunable they are measured on the first CUDA call (``codegen/run/tune.py``).
    ``strategy``: force an entry of ``STRATEGIES`` by name (an error says why it does not apply).
    ``products``: the chunked strategy's tensor-core products in a 16-bit layer, "tf32" (None) or
    "half" (``codegen/run/chunked.py``'s ``PRODUCTS``)."""
    cell = extract_cell(layer)
    chosen = choose(layer, cell, strategy)
    opts = Options(chunk, tile, num_warps, products)
    check_options(layer, chosen, opts)
    if chosen.tunable and tile is None and num_warps is None:
        from archdsl.codegen.run.tune import TunedCell

        return TunedCell(layer, cell, chosen, opts)
    return chosen.build(layer, cell, opts)


def check_settings(
    layer: LayerIR, strategy: str | None = None, products: str | None = None, keep_states: bool = False
) -> None:
    """The ArchdslError ``compile_cell`` would raise for these settings, without compiling;
    ``keep_states``: the loop's checkpoint stride of 1 (``archdsl train --keep-states``), an error
    where the layer runs another strategy."""
    cell = extract_cell(layer)
    chosen = choose(layer, cell, strategy)
    check_options(layer, chosen, Options(products=products))
    if keep_states and chosen.name != "loop":
        raise ArchdslError(
            f"--keep-states: the fused loop's setting (its forward keeps every step's state), and "
            f"'{layer.name}' runs the {chosen.name} strategy (archdsl compile SPEC says which and why)"
        )


def build_cell(
    layer: LayerIR,
    chunk: int | None,
    tile: int | None,
    num_warps: int | None,
    strategy: str | None = None,
    products: str | None = None,
):
    """The compiled cell at these settings, without measuring any (``compile_cell`` less the tuner)."""
    cell = extract_cell(layer)
    chosen, opts = choose(layer, cell, strategy), Options(chunk, tile, num_warps, products)
    check_options(layer, chosen, opts)
    return chosen.build(layer, cell, opts)


def short_conv(x, weight, bias, silu: bool):
    """The short causal convolution as Triton kernels, one pass each way (``codegen/run/shortconv.py``;
    ``archdsl.convolve.depthwise_conv`` calls it on a GPU or under the interpreter)."""
    from archdsl.codegen.run.shortconv import short_conv as kernels

    return kernels(x, weight, bias, silu)


__all__ = [
    "STRATEGIES",
    "Plan",
    "applicable",
    "build_cell",
    "check_settings",
    "compile_cell",
    "emit_module",
    "make_plan",
    "short_conv",
]
