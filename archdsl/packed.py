"""Packed sequences: several sequences of different lengths in one row, ``x [1, total, dim]`` with
``cu_seqlens = [0, end_1, end_2, ..., total]`` (flash-linear-attention's convention), each sequence
starting from its own initial state (zeros unless given, ``state[name]`` [N, *axes]).

The projections run on the packed row (they are per token). The recurrence runs the sequences as
rows of a batch, one cell call per distinct length: sequences of equal length share a call, and no
sequence ever sees another's state, so a boundary may fall anywhere (inside a checkpoint segment or
a chunk of the strategy). Every strategy, compiled or the reference, runs unchanged; outputs, the
final state of each sequence and every gradient are those of running the sequences one by one.

What this does not do yet is reset the state inside one kernel launch: a packed row of many
distinct lengths costs one launch per length. The in-kernel form (a per-token flag that replaces
the previous state by the initial one, ``S_prev := h0`` at a boundary) is future work.
"""

from __future__ import annotations

import torch

from archdsl.layer_io import LayerInputError, check_input, check_state


def check_packed(layer, weight, x, state, cu_seqlens) -> list[tuple[int, int]]:
    """The sequences' (start, end) in a packed x [1, total, dim]; refuses what does not fit."""
    check_input(layer, weight, x, None)
    if x.shape[0] != 1:
        raise LayerInputError(
            f"layer '{layer.name}': with cu_seqlens, x packs the sequences in one row [1, total, "
            f"{layer.dim}], found shape {list(x.shape)}"
        )
    bounds = boundaries(cu_seqlens, x.shape[1], layer.name)
    check_state(layer, x, state, len(bounds))
    return bounds


def boundaries(cu_seqlens, total: int, name: str) -> list[tuple[int, int]]:
    """[(start, end)] of each sequence; refuses offsets that do not cut [0, total) into non-empty pieces."""
    if isinstance(cu_seqlens, torch.Tensor):
        if cu_seqlens.dim() != 1 or cu_seqlens.is_floating_point():
            raise LayerInputError(
                f"layer '{name}': cu_seqlens must be a 1-D integer tensor, found "
                f"{cu_seqlens.dtype} of shape {list(cu_seqlens.shape)}"
            )
        cu = [int(v) for v in cu_seqlens.tolist()]
    else:
        cu = [int(v) for v in cu_seqlens]
    if len(cu) < 2 or cu[0] != 0 or cu[-1] != total or any(b <= a for a, b in zip(cu, cu[1:])):
        raise LayerInputError(
            f"layer '{name}': cu_seqlens must rise strictly from 0 to the packed length {total}, found {cu}"
        )
    return list(zip(cu, cu[1:]))


def packed_positions(bounds: list[tuple[int, int]], start: torch.Tensor | None, device) -> torch.Tensor:
    """[1, total] int64: each token's position in its own sequence, from ``start[k]`` (the tokens the
    k-th sequence has seen before, [N]; zeros when None): a position restarts at every boundary."""
    begin = torch.tensor([a for a, _ in bounds], device=device)
    lengths = torch.tensor([b - a for a, b in bounds], device=device)
    seq = torch.repeat_interleave(torch.arange(len(bounds), device=device), lengths)  # [total]
    pos = torch.arange(bounds[-1][1], device=device) - begin[seq]
    return (pos if start is None else pos + start.to(device)[seq]).unsqueeze(0)


def packed_cell(cell, inputs: dict, frontier: dict, state0: dict | None, bounds: list[tuple[int, int]]):
    """Run ``cell(inputs, frontier, state0) -> (y, finals)`` over packed sequences.

    inputs: name -> [1, total, *axes]; state0: name -> [N, *axes] or None. Returns y [1, total, *axes]
    and the final states {name: [N, *axes]}, sequence by sequence."""
    by_length: dict[int, list[int]] = {}
    for k, (a, b) in enumerate(bounds):
        by_length.setdefault(b - a, []).append(k)
    ys: list = [None] * len(bounds)
    finals: dict[str, list] = {}
    for seqs in by_length.values():
        rows = {n: torch.cat([v[:, bounds[k][0] : bounds[k][1]] for k in seqs]) for n, v in inputs.items()}
        h0 = None
        if state0:
            index = torch.tensor(seqs, device=next(iter(state0.values())).device)
            h0 = {s: v.index_select(0, index) for s, v in state0.items() if v is not None}
        y, fin = cell(rows, frontier, h0)
        for j, k in enumerate(seqs):
            ys[k] = y[j]
            for s, v in fin.items():
                finals.setdefault(s, [None] * len(bounds))[k] = v[j]
    y = torch.cat(ys).unsqueeze(0)
    return y, {s: torch.stack(v) for s, v in finals.items()}
