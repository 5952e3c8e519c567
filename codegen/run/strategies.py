"""Execution strategies: one ordered list behind one protocol, tried in order.

Each entry says, for a cell, why it does not apply (``None``: it does) and builds the compiled cell.
``choose`` takes the first entry that applies, or the one a caller names (``--strategy``), with its
reason when it cannot run that cell. Every compiled cell answers the same protocol (``Compiled``), so
no caller needs to know which entry built it.

=============  =================================================================================
chunked        (by name only, for now) the update is linear in the state, diagonal decay plus
               rank-one terms, read out by a contraction (GatedDeltaNet, Mamba2, GLA, E88 without
               its tanh): chunkwise-parallel kernels whose products run on tensor cores
persistent     a learned matrix mixes the whole state (E1, LSTM, GRU): one persistent launch per
               direction, the matrix product by ``tl.dot`` inside, a grid barrier per step; also
               after a linear rewrite: a state-free addend of the operand hoisted as one GEMM
               over all tokens (E42), a chain of parameter matrices folded into one (E66)
dense          the same cells where the persistent layout does not fit: a GEMM per step and a
               fused kernel for the rest of the step
loop           everything else: the fused sequential loop, the state in registers, per-token work
               hoisted before it and a mixing readout after it
=============  =================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from archdsl.codegen.analysis import find_matvecs, persistent_form, step_cell
from archdsl.codegen.classify import classify
from archdsl.codegen.plan import make_plan

from archdsl.args import PRODUCTS
from archdsl.autodiff import Cell
from archdsl.errors import ArchdslError
from archdsl.ir import LayerIR


class Compiled(Protocol):
    """What every strategy builds."""

    strategy: str  # the entry's name
    hash: str  # of the generated module's source
    path: Path  # the generated module

    def __call__(self, inputs: dict, frontier: dict, state0: dict | None = None) -> tuple: ...

    def describe(self) -> list[tuple[str, str]]:
        """(label, text) lines for ``archdsl compile``."""
        ...


@dataclass(frozen=True)
class Options:
    chunk: int | None = None  # steps per block: the loop's checkpoint stride (default 16), the chunk
    # length of the chunked form; None: the strategy's default
    tile: int | None = None  # block of the split axis, or rows per program (a power of two)
    num_warps: int | None = None  # a power of two, at most 32
    #: the chunked strategy's tensor-core products in a 16-bit layer (``chunked.PRODUCTS``): "tf32"
    #: (None: the default) or "half"
    products: str | None = None

    def __post_init__(self):
        """The same checks as the command line's (``archdsl/args.py``), for callers of the API."""
        for name, v, power in (("chunk", self.chunk, False), ("tile", self.tile, True)):
            if v is not None and not (isinstance(v, int) and v >= 1 and (not power or v & (v - 1) == 0)):
                kind = "a power of two" if power else "a whole number"
                raise ArchdslError(f"{name} must be {kind} >= 1, found {v!r}")
        w = self.num_warps
        if w is not None and not (isinstance(w, int) and 1 <= w <= 32 and w & (w - 1) == 0):
            raise ArchdslError(f"num_warps must be a power of two from 1 to 32, found {w!r}")
        if self.products not in (None, *PRODUCTS):
            expected = " or ".join(f"'{p}'" for p in PRODUCTS)
            raise ArchdslError(f"products must be {expected}, found {self.products!r}")


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str  # one line, for `archdsl compile` and the docs
    tunable: bool  # tile and warps measured on the first CUDA call (codegen/run/tune.py)
    why_not: Callable[[LayerIR, Cell], str | None]
    build: Callable[[LayerIR, Cell, Options], Compiled]
    #: tried when no strategy is named (True), only by ``--strategy NAME`` (False), or when this
    #: function of (layer, cell) returns None (else its reason, which ``archdsl compile`` prints)
    automatic: bool | Callable[[LayerIR, Cell], str | None] = True

    def declines(self, layer: LayerIR, cell: Cell) -> str | None:
        """Why this strategy, where it applies, is not chosen when none is named (None: it is)."""
        if callable(self.automatic):
            return self.automatic(layer, cell)
        return None if self.automatic else "tried only when named"


def _matvecs(cell: Cell):
    return find_matvecs(cell, make_plan(cell).block)


def _persistent_why_not(layer: LayerIR, cell: Cell) -> str | None:
    if not _matvecs(cell):
        return "no learned matrix too large for the registers mixes the state"
    if persistent_form(cell) is None:
        return (
            "a contraction does not read a state renamed onto its axis (nor does after a state-free "
            "addend is hoisted and a chain of parameter matrices folded), or the rest of the step "
            "mixes the state's rows"
        )
    return None


def _build_persistent(layer: LayerIR, cell: Cell, opts: Options) -> Compiled:
    from archdsl.codegen.run.persistent import build_persistent

    return build_persistent(layer, cell, opts.tile, opts.num_warps)


def _dense_why_not(layer: LayerIR, cell: Cell) -> str | None:
    return None if _matvecs(cell) else "no learned matrix too large for the registers mixes the state"


def _build_dense(layer: LayerIR, cell: Cell, opts: Options) -> Compiled:
    from archdsl.codegen.run.dense import DenseCell
    from archdsl.codegen.run.loop import build_loop

    matvecs = _matvecs(cell)
    step = build_loop(layer, step_cell(cell, matvecs), Options(1, opts.tile, opts.num_warps), parts=False)
    return DenseCell(cell, matvecs, step)


def _loop_why_not(layer: LayerIR, cell: Cell) -> str | None:
    matvecs = _matvecs(cell)
    if matvecs:
        sizes = ", ".join(f"{m.const}[{', '.join(cell.consts[m.const])}]" for m in matvecs)
        return f"a learned matrix mixes the state ({sizes}): too large to keep in every program's registers"
    return None


def _build_loop(layer: LayerIR, cell: Cell, opts: Options) -> Compiled:
    from archdsl.codegen.run.loop import build_loop

    return build_loop(layer, cell, opts)


def _chunked_why_not(layer: LayerIR, cell: Cell) -> str | None:
    got = classify(cell)
    return got if isinstance(got, str) else None


# Chunks of 64: the chunk's triangular inverse by forward substitution and the decay gradients
# summed term by term keep fp32 within 1e-5 of the reference at every chunk length (tests/test_chunked.py).
# Every linear form takes them, the delta rule included. (A delta rule with a key axis of 128 took chunks
# of 32 until the backward was split by axis; since then, at 32 GDN's per-token dq/dk kernel runs 38 ms
# a call against 2.4 at 64, and the GDN_100m layer 47.3 ms against 10.5: benchmarks/results/chunk-default/.)
CHUNKED_DEFAULT = 64


#: the chunked strategy is chosen without being named for a key axis of at least this size. Measured on
#: an H100, whole layers fwd+bwd at B 32, T 512 (benchmarks/results/chunked-2/): GDN_100m (key 128)
#: 14.96 ms chunked against 18.97 on the loop, Mamba2_100m (key 64) 11.87 against 17.36, but E88_d12h32
#: with nonlin = identity (key 32) 5.44 against 3.16.
CHUNKED_AUTOMATIC_KEY = 64


def _chunked_declines(layer: LayerIR, cell: Cell) -> str | None:
    chunked = classify(cell)
    key = chunked.key_size
    if key >= CHUNKED_AUTOMATIC_KEY:
        return None
    name = min(chunked.forms, key=lambda f: f.cell.sizes[f.key]).key
    return f"its key axis {name} = {key} is below {CHUNKED_AUTOMATIC_KEY}, where the loop measured faster"


def _build_chunked(layer: LayerIR, cell: Cell, opts: Options) -> Compiled:
    from archdsl.codegen.run.chunked import ChunkedCell

    chunked = classify(cell)
    chunk = opts.chunk or CHUNKED_DEFAULT
    if chunk < 16 or chunk & (chunk - 1):
        raise ArchdslError(
            f"--chunk {chunk}: the chunked strategy's chunk is a power of two of at least 16 "
            f"(the smallest block of a tensor-core product); the default is {CHUNKED_DEFAULT}"
        )
    return ChunkedCell(layer, chunked, chunk, half=opts.products == "half")


STRATEGIES: list[Strategy] = [
    Strategy(
        "chunked",
        "chunked linear recurrence (tensor-core products inside chunks, fp32 state between them)",
        False,
        _chunked_why_not,
        _build_chunked,
        automatic=_chunked_declines,
    ),
    Strategy(
        "persistent",
        "persistent dense recurrence (matrices x state by tl.dot in-kernel, grid barrier per step)",
        False,  # its defaults come from its own H100 sweep (benchmarks/dense.py)
        _persistent_why_not,
        _build_persistent,
    ),
    Strategy(
        "dense",
        "dense recurrent matmul (per-step GEMM + fused step kernel)",
        False,
        _dense_why_not,
        _build_dense,
    ),
    Strategy("loop", "fused sequential loop", True, _loop_why_not, _build_loop),
]


def by_name(name: str) -> Strategy:
    for s in STRATEGIES:
        if s.name == name:
            return s
    known = ", ".join(s.name for s in STRATEGIES)
    raise ArchdslError(f"--strategy: unknown strategy '{name}'; choose one of {known}")


def applicable(layer: LayerIR, cell: Cell) -> list[tuple[Strategy, str | None]]:
    """Every strategy with why it does not apply to this cell (None where it does), in order."""
    return [(s, s.why_not(layer, cell)) for s in STRATEGIES]


def check_options(layer: LayerIR, strategy: Strategy, opts: Options) -> None:
    """An ArchdslError where ``opts`` asks for what ``strategy`` does not do."""
    if opts.products == "half" and strategy.name != "chunked":
        raise ArchdslError(
            f"--products half: only the chunked strategy reads it, and '{layer.name}' runs the "
            f"{strategy.name} strategy (archdsl compile SPEC lists the strategies that apply to it)"
        )


def choose(layer: LayerIR, cell: Cell, name: str | None = None) -> Strategy:
    """The first strategy that applies, or the named one (an error says why it cannot run this cell)."""
    if name is not None:
        strategy = by_name(name)
        reason = strategy.why_not(layer, cell)
        if reason is not None:
            raise ArchdslError(f"--strategy {name} does not apply to '{layer.name}': {reason}")
        return strategy
    for strategy, reason in applicable(layer, cell):
        if reason is None and strategy.declines(layer, cell) is None:
            return strategy
    raise AssertionError("the loop applies to every cell the others refuse")
