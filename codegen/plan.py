"""The execution plan of a cell: which axes the grid splits, block sizes, the strategy, the grid.

A *fused sequential loop* runs one program per (batch element, tile of the split axes) and keeps its
slice of the state in registers for the whole sequence. An axis can be split across programs when
the step never mixes it: no sum over it, no renaming onto or from it, and every state and the
readout have it (E88's heads and value axis; every element of a diagonal state). The other axes are
held whole in each program, padded to a power of two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from archdsl.autodiff import Cell
from archdsl.errors import ArchdslError
from archdsl.ir import Op

#: the most elements a Triton block (one program's tile of a tensor) may have
MAX_BLOCK = 1 << 20
#: the default tile keeps a program's state at most this many floats (32 KiB) where it can: a larger
#: tile spills registers and takes minutes to compile
STATE_TARGET = 8192


def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


@dataclass(frozen=True)
class Plan:
    strategy: str
    axes: tuple[str, ...]
    sizes: dict
    split: tuple[str, ...]  # axes tiled across programs
    block: dict  # axis -> block size (power of two)
    tiles: dict  # split axis -> number of tiles
    chunk: int  # checkpoint stride C of the backward
    num_warps: int = 4

    @property
    def n_tiles(self) -> int:
        return math.prod(self.tiles.values()) if self.tiles else 1

    def state_bytes(self, states: dict) -> int:
        return 4 * sum(math.prod(self.block[a] for a in ax) for ax in states.values())

    def describe(self, states: dict) -> dict:
        return {
            "strategy": self.strategy,
            "split_axes": list(self.split),
            "blocks": dict(self.block),
            "grid": f"(B, {self.n_tiles})",
            "state_bytes_per_program": self.state_bytes(states),
            "checkpoint_stride": self.chunk,
            "num_warps": self.num_warps,
        }


def mixed_axes(graph, nodes) -> set[str]:
    """Axes that a sum or a renaming among ``nodes`` mixes."""
    mixed: set[str] = set()
    for i in nodes:
        n = graph[i]
        if n.op is Op.SUM:
            mixed.add(n.attr)
        elif n.op is Op.RENAME:
            for a, b in n.attr:
                mixed.update((a, b))
    return mixed


def splittable_axes(cell: Cell) -> tuple[str, ...]:
    live = cell.graph.ancestors([*cell.next_state.values(), cell.output])
    mixed = mixed_axes(cell.graph, live)
    must_have = [*cell.states.values(), cell.output_axes]
    return tuple(a for a in cell.axes if a not in mixed and all(a in ax for ax in must_have))


def make_plan(
    cell: Cell, chunk: int = 16, tile: int | None = None, max_tile: int = 8, num_warps: int | None = None
) -> Plan:
    """``tile``: the block of the last split axis (None: up to ``max_tile``, smaller where a program's
    state would pass ``STATE_TARGET`` floats); other split axes get 1."""
    split = splittable_axes(cell)
    block = {a: 1 if a in split else next_pow2(cell.sizes[a]) for a in cell.axes}
    tiles = {}
    if split:
        last = split[-1]
        per_unit = max(math.prod(block[a] for a in ax) for ax in cell.states.values())
        fits = 1 << max(0, (STATE_TARGET // per_unit).bit_length() - 1)  # a power of two, at least 1
        block[last] = min(next_pow2(cell.sizes[last]), tile or min(max_tile, fits))
        tiles = {a: math.ceil(cell.sizes[a] / block[a]) for a in split}
    state_elems = max(math.prod(block[a] for a in ax) for ax in cell.states.values())
    for s, ax in cell.states.items():
        elems = math.prod(block[a] for a in ax)
        if elems > MAX_BLOCK:
            shape = " x ".join(f"{a} {block[a]}" for a in ax)
            raise ArchdslError(
                f"state {s}[{', '.join(ax)}] cannot fit: each program would hold {elems:,} floats "
                f"({shape}; {4 * elems / 2**20:,.0f} MiB), more than a Triton block's {MAX_BLOCK:,}",
                hint="split the state over more heads, or make the axes each program holds whole smaller",
            )
    # a warp per 512 floats of state, up to 8; 16 for a state past the target (one head of a large
    # matrix memory that no axis of which can be split: fewer registers a thread, fewer spills)
    warps = num_warps or (16 if state_elems > STATE_TARGET else max(1, min(8, state_elems // 512)))
    return Plan(
        "fused sequential loop", cell.axes, dict(cell.sizes), split, block, tiles, max(1, int(chunk)), warps
    )


def make_token_plan(axes, sizes: dict, graph, tokens: int = 16) -> Plan:
    """The per-token kernels' plan: every axis whole in each program, ``tokens`` steps per program."""
    block = {a: next_pow2(sizes[a]) for a in axes}
    largest = max(math.prod(block[a] for a in n.axes) for n in graph.nodes)
    warps = max(1, min(8, largest // 512))
    return Plan("per-token", tuple(axes), dict(sizes), (), block, {}, tokens, warps)
