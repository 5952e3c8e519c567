"""Saved tensors that are cheap to make again: saved as the recipe that made them.

A layer's backward reads what its ops saved, and some of that is an elementwise function of tensors
saved anyway: a short convolution's output (of the projection output, which the convolution's own
backward keeps), the per-token coefficients (of those outputs and parameters), a contiguous copy of a
projection output's slice. Keeping them through the backward cost Mamba2 more activation memory than
everything else it saves (``benchmarks/saved_memory.py``; benchmarks/results/saved-memory/).

Inside ``recomputing()`` (a layer's forward), a producer registers its output with
``recomputable(outputs, fn, inputs)``; a save of an output or a view of it then keeps ``fn`` and the
inputs (each kept as a save would keep it: an input that is itself recomputable, as a recipe), and
reading it in the backward calls ``fn`` again. ``fn`` must be deterministic (archdsl's elementwise
kernels are), so the backward reads the forward's values bit for bit. A recomputed group is held
until each of its saves has been read: the ops of one backward that read the same value share one
rerun.

Only in eager autograd: under ``torch.compile`` its partitioner chooses what to recompute, and under
another's saved-tensor hooks (activation checkpointing, offloading) theirs apply and these stay off.
That holds in the parts of a compiled call that run eagerly between its graphs too (after a graph
break), where ``torch.compiler.is_compiling()`` is false: hooks set there were traced into the
compiled graphs (gdn.rnn with CUDA graphs failed in its first backward,
benchmarks/results/round-15/), so ``recomputing`` also stays off while dynamo's frame callback is
set. A layer's own switch, ``RecurrentLayer.recompute``, turns it off for good (``archdsl train
--compile`` sets it to False in every layer).
``ARCHDSL_RECOMPUTE=0`` in the environment turns it off (every value kept, as before): the A/B of
memory against the backward's reruns.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch

_TABLES: list[_Table] = []  # one per active ``recomputing()``, innermost last


class _Group:
    """The outputs of one call of ``fn(*inputs)``. A rerun is held until every save of the group has
    been read once (``pending``: one per recipe packed), so the ops of one backward that read the same
    value share one rerun; after that it is cached weakly (a second backward of a retained graph reruns
    for each read)."""

    def __init__(self, fn: Callable, inputs: list, layouts: list[tuple]):
        self.fn, self.inputs, self.layouts = fn, inputs, layouts
        self.cache: list = [None] * len(layouts)
        self.held: list | None = None
        self.pending = 0

    def value(self, k: int) -> torch.Tensor:
        got = self.held[k] if self.held is not None else None
        if got is None and self.cache[k] is not None:
            got = self.cache[k]()
        if got is None:
            with torch.no_grad():
                outs = list(self.fn(*(_unpack(x) for x in self.inputs)))
            for i, (t, layout) in enumerate(zip(outs, self.layouts)):
                assert (t.shape, t.stride(), t.dtype) == layout, "a recomputed tensor changed its layout"
                self.cache[i] = weakref.ref(t)
            self.held, got = outs, outs[k]
        self.pending -= 1
        if self.pending <= 0:
            self.held = None
        return got


class Recipe:
    """What a save keeps of a registered output's view: its geometry and the group to remake it
    from (``SavedTensor.data`` shows it: benchmarks/saved_memory.py counts it as 0 bytes)."""

    def __init__(self, group: _Group, k: int, t: torch.Tensor):
        self.group, self.k = group, k
        self.size, self.stride, self.offset, self.dtype = t.shape, t.stride(), t.storage_offset(), t.dtype


class _Table:
    """The registered outputs of one forward: storage address -> (weak ref to it, group, index)."""

    def __init__(self):
        self.entries: dict[int, tuple] = {}

    def add(self, outputs: Sequence[torch.Tensor], fn: Callable, inputs: Sequence) -> None:
        layouts = [(t.shape, t.stride(), t.dtype) for t in outputs]
        group = _Group(fn, [self.pack(x) for x in inputs], layouts)  # recipes, or tensors detached
        for k, t in enumerate(outputs):
            self.entries[t.untyped_storage().data_ptr()] = (weakref.ref(t), group, k)

    def pack(self, t):
        if not isinstance(t, torch.Tensor):
            return t
        ptr = t.untyped_storage().data_ptr()
        entry = self.entries.get(ptr)
        if entry is None:
            return _detached(t)
        ref, group, k = entry
        alive = ref()  # the address may have been freed and reused by another tensor since
        if alive is None or alive.untyped_storage().data_ptr() != ptr:
            del self.entries[ptr]
            return _detached(t)
        group.pending += 1
        return Recipe(group, k, t)


def _detached(x):
    """A tensor a save or a group keeps, without its autograd history. A hook's result is held by the
    saving node, so a tensor with history kept there closes a cycle through autograd's C++ nodes, which
    Python's collector cannot see: an op that saves its own output (``exp``) then holds itself, and
    with it these hooks and every recipe of the forward. A forward whose backward never runs kept all
    that alive (on an H200, GDN_100m at B 8 × T 512: 47 MB a call). The backward reads the same values
    (first-order gradients only, as archdsl's kernels give)."""
    return x.detach() if isinstance(x, torch.Tensor) else x


def _unpack(x):
    if isinstance(x, Recipe):
        return x.group.value(x.k).as_strided(x.size, x.stride, x.offset)
    return x


def recomputable(outputs: Sequence[torch.Tensor], fn: Callable, inputs: Sequence) -> None:
    """Register ``outputs`` (fresh tensors ``fn(*inputs)`` returned, in order) with the innermost
    ``recomputing()``; nothing outside one."""
    if _TABLES and torch.is_grad_enabled():
        _TABLES[-1].add(outputs, fn, inputs)


def _others_hooks() -> bool:
    """Are saved-tensor hooks of someone else's active (checkpointing, offloading)?"""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return top is None or top(False) is not None


def _compiled_call() -> bool:
    """Is a ``torch.compile``'d call running? While dynamo traces (``is_compiling``), and in the parts
    of a compiled call that run eagerly between its graphs, where dynamo's frame callback stays set
    (``is_compiling`` is false there)."""
    if torch.compiler.is_compiling():
        return True
    callback = getattr(torch._C._dynamo.eval_frame, "get_eval_frame_callback", None)
    return callback is not None and callback() not in (None, False)


@contextmanager
def recomputing(enabled: bool = True):
    """Saves of registered outputs keep their recipes, in eager autograd without other hooks.
    ``enabled``: the caller's own switch (a layer's ``recompute``; off in a model that is compiled)."""
    off = not enabled or os.environ.get("ARCHDSL_RECOMPUTE", "1") == "0"
    if off or not torch.is_grad_enabled() or _compiled_call() or _others_hooks():
        yield
        return
    table = _Table()
    _TABLES.append(table)
    try:
        with torch.autograd.graph.saved_tensors_hooks(table.pack, _unpack):
            yield
    finally:
        _TABLES.pop()
