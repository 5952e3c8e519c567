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


def live_nodes(cell: Cell) -> set[int]:
    """The nodes the step needs: the new states, the readout and what they read."""
    return cell.graph.ancestors([*cell.next_state.values(), cell.output])


def splittable_axes(cell: Cell) -> tuple[str, ...]:
    """Axes the step never mixes (looking only at the nodes it needs) and every state and the readout
    carry: the axes a grid may split across programs."""
    mixed = mixed_axes(cell.graph, live_nodes(cell))
    must_have = [*cell.states.values(), cell.output_axes]
    return tuple(a for a in cell.axes if a not in mixed and all(a in ax for ax in must_have))


def make_plan(
    cell: Cell, chunk: int = 16, tile: int | None = None, max_tile: int = 8, num_warps: int | None = None
) -> Plan:
    """``tile``: the block of the last split axis (None: up to ``max_tile``, smaller where a program's
    state or a value of its step would pass ``STATE_TARGET`` floats); other split axes get 1."""
    split = splittable_axes(cell)
    block = {a: 1 if a in split else next_pow2(cell.sizes[a]) for a in cell.axes}
    # the blocks a program holds: every state, and every value of the step (a product broadcast over
    # more axes than any state, M2RNN's H[h, i, j] * W[h, j, l] summed over j, can be far larger)
    held = [*cell.states.values(), *(cell.graph[i].axes for i in live_nodes(cell))]
    tiles = {}
    if split:
        last = split[-1]
        per_unit = max(math.prod(block[a] for a in ax) for ax in held)
        fits = 1 << max(0, (STATE_TARGET // per_unit).bit_length() - 1)  # a power of two, at least 1
        block[last] = min(next_pow2(cell.sizes[last]), tile or min(max_tile, fits))
        tiles = {a: math.ceil(cell.sizes[a] / block[a]) for a in split}
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
    # (of the largest block a program holds, a step value or a state)
    work = max(math.prod(block[a] for a in ax) for ax in held)
    warps = num_warps or (16 if work > STATE_TARGET else max(1, min(8, work // 512)))
    return Plan(
        "fused sequential loop", cell.axes, dict(cell.sizes), split, block, tiles, max(1, int(chunk)), warps
    )


#: the per-token kernels' launch (codegen/emit/token.py; the chunked strategy's coefficients and
#: readout, the loop's hoisted parts): ``tokens`` per program (the kernels' ``CHUNK``, a compile-time
#: constant) and ``warps`` (None: a warp per 512 elements of the largest block a token holds, 1 to 8).
#: Both reach the generated module as its launchers' defaults, so a change gives a new source, hash and
#: op name (nothing stale is reused). benchmarks/token_sweep.py times the kernels over both.
TOKEN_LAUNCH = {"tokens": 16, "warps": None}


def make_token_plan(axes, sizes: dict, graph, tokens: int | None = None) -> Plan:
    """The per-token kernels' plan: every axis whole in each program, ``tokens`` steps per program
    (None: ``TOKEN_LAUNCH``'s, read per call)."""
    block = {a: next_pow2(sizes[a]) for a in axes}
    largest = max(math.prod(block[a] for a in n.axes) for n in graph.nodes)
    warps = TOKEN_LAUNCH["warps"] or max(1, min(8, largest // 512))
    return Plan("per-token", tuple(axes), dict(sizes), (), block, {}, tokens or TOKEN_LAUNCH["tokens"], warps)


# ---- the persistent dense recurrence (codegen/run/persistent.py) ----------------------------------

BATCH = "_b"  # the batch axis of the register blocks (every program holds a block of batch rows)
MAX_BLOCK_B = 128  # batch rows per program; more batch means more programs
MAX_TILES = 128  # default rows per program: the smallest tile that needs at most this many programs
DOT_MIN = 16  # tl.dot needs every dimension >= 16


def persistent_rows(size: int, rows: int | None) -> int:
    """State rows per program: ``rows`` (default: the smallest tile that keeps the grid within
    ``MAX_TILES`` programs) as a power of two of at least ``DOT_MIN``, no more than the padded axis."""
    if rows is None:
        rows = DOT_MIN
        while math.ceil(size / rows) > MAX_TILES:
            rows *= 2
    rows = max(DOT_MIN, next_pow2(rows))
    return min(rows, max(DOT_MIN, next_pow2(size)))


def make_dense_plan(cell: Cell, step: Cell, rows_axis: str, rows: int, num_warps: int) -> Plan:
    """The persistent kernels' blocks over ``(batch, *layer axes)``: the tile of ``rows`` of the rows'
    axis, the step's other axes whole, the contracted axes absent (the step never holds them)."""
    held = {a for i in live_nodes(step) for a in step.graph[i].axes}
    held |= {a for ax in cell.states.values() for a in ax} | set(cell.output_axes)
    block, tiles = {BATCH: "BLOCK_B"}, {}
    for a in cell.axes:
        if a == rows_axis:
            block[a], tiles[a] = rows, math.ceil(cell.sizes[a] / rows)
        else:
            block[a] = next_pow2(cell.sizes[a]) if a in held else 1
    return Plan(
        "persistent dense recurrence",
        (BATCH, *cell.axes),
        {**cell.sizes, BATCH: "B"},
        (rows_axis,),
        block,
        tiles,
        1,
        num_warps,
    )


@dataclass(frozen=True)
class PersistentPlan:
    """The persistent grid at run time: its tiles of rows and the blocks of each launch."""

    rows_axis: str
    rows: int  # state rows per program
    tiles: int  # programs per batch block
    num_warps: int
    block_k: int
    size: int  # the rows' axis size

    def blocks(self, batch: int) -> tuple[int, int, int]:
        """(batch rows per program, columns per tl.dot, programs) at this batch size: a wider batch
        block takes a narrower k block (the register blocks stay the same size)."""
        bb = max(DOT_MIN, min(MAX_BLOCK_B, next_pow2(batch)))
        block_k = max(DOT_MIN, min(self.block_k, 8192 // bb, next_pow2(self.size)))
        return bb, block_k, self.tiles * math.ceil(batch / bb)

    def programs(self, batch: int) -> int:
        return self.blocks(batch)[2]

    def describe(self, states: dict) -> dict:
        return {
            "strategy": "persistent dense recurrence",
            "split_axes": [self.rows_axis],
            "blocks": {self.rows_axis: self.rows, "batch": f"<= {MAX_BLOCK_B}", "k": f"<= {self.block_k}"},
            "grid": f"({self.tiles} x batch blocks of up to {MAX_BLOCK_B},)",
            "programs": self.tiles,
            "rows_per_program": self.rows,
            "state_bytes_per_program": 4 * MAX_BLOCK_B * self.rows * len(states),
            "checkpoint_stride": 1,
            "num_warps": self.num_warps,
        }
