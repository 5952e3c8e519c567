"""The invariant behind the GPU's race freedom, checked on the CPU: within one launch of a fused-loop
or per-token kernel, no two programs store to the same address, and no program reads an address
that another program of the same launch stores to (the backward's scratch regions are disjoint per
program). The CPU interpreter runs programs one after another, so a shared region gives the right
numbers there; this test records every program's stores and loads instead."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from op_oracles import default_params, frontier_of, layer_of, random_inputs


@contextmanager
def record_accesses():
    """Every launch's (program, addresses) of its masked stores and loads, through the interpreter."""
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    set_dim, store, load = builder.set_grid_dim, builder.create_masked_store, builder.create_masked_load
    launches: list[dict] = []

    def on_dim(self, *grid):
        launches.append({"stores": [], "loads": []})
        return set_dim(self, *grid)

    def addresses(ptrs, mask):
        return np.broadcast_to(ptrs.data, np.broadcast_shapes(ptrs.data.shape, mask.data.shape))[
            np.broadcast_to(mask.data, np.broadcast_shapes(ptrs.data.shape, mask.data.shape))
        ].astype(np.int64)

    def on_store(self, ptrs, value, mask, cache_policy):
        launches[-1]["stores"].append((self.grid_idx, addresses(ptrs, mask)))
        return store(self, ptrs, value, mask, cache_policy)

    def on_load(self, ptrs, mask, other, cache_policy, is_volatile):
        launches[-1]["loads"].append((self.grid_idx, addresses(ptrs, mask)))
        return load(self, ptrs, mask, other, cache_policy, is_volatile)

    builder.set_grid_dim, builder.create_masked_store, builder.create_masked_load = on_dim, on_store, on_load
    try:
        yield launches
    finally:
        builder.set_grid_dim, builder.create_masked_store, builder.create_masked_load = set_dim, store, load


def conflicts(launch: dict) -> list[str]:
    """Addresses stored by two programs, or stored by one and read by another."""
    programs = {p for p, _ in launch["stores"]} | {p for p, _ in launch["loads"]}
    ids = {p: k for k, p in enumerate(sorted(programs))}

    def pairs(kind):
        addr = [a for _, a in launch[kind]]
        who = [np.full(a.size, ids[p]) for p, a in launch[kind]]
        return (np.concatenate(addr), np.concatenate(who)) if addr else (np.zeros(0, np.int64),) * 2

    addr, who = pairs("stores")
    n = max(len(ids), 1)
    pair = np.unique(addr * n + who)  # (address, program) once each, sorted by address
    addr, who = pair // n, pair % n
    written, first, count = np.unique(addr, return_index=True, return_counts=True)
    out = [f"{int((count > 1).sum())} addresses stored by several programs"] if (count > 1).any() else []
    la, lw = pairs("loads")
    pos = np.minimum(np.searchsorted(written, la), max(written.size - 1, 0))
    hit = (written[pos] == la) & (who[first][pos] != lw) if written.size else np.zeros(0, bool)
    if hit.any():
        out.append(f"{int(hit.sum())} loads of addresses another program stores to")
    return out


def _run(cc, layer, B, T):
    inputs = {k: v.requires_grad_(True) for k, v in random_inputs(layer, B, T).items()}
    params = {k: v.clone().requires_grad_(True) for k, v in default_params(layer).items()}
    y, final = cc(inputs, frontier_of(layer, params), None)
    loss = y.float().square().sum() + sum(v.square().sum() for v in final.values())
    torch.autograd.grad(loss, [*inputs.values(), *params.values()])


DELTA = """rnn delta
hyper dim = 4
axis i = 2
axis j = 4
project x -> k[i], v[j]
param g[i] = ones()
state S[i, j]
kn = l2norm[i](k * g)
delta = v - sum[i](S * kn)
S' = tanh(0.5 * S + kn * delta)
y = sum[i](S' * kn)
output y
"""


@pytest.mark.parametrize("chunk", [2, 1], ids=["segments-recomputed", "every-state-kept"])
def test_programs_of_a_launch_touch_disjoint_memory(chunk):
    """A small delta rule (a hoisted per-token part with a parameter, values stashed by the
    recompute, or kept by the forward at ``chunk=1``): B 2, 2 tiles of the value axis, 2 checkpoint
    segments; every launch."""
    from archdsl.codegen import build_cell
    from archdsl.codegen.emit.fused import kept_values, stash_nodes

    layer = layer_of(DELTA)
    cc = build_cell(layer, chunk, 2, 1)
    assert cc.plan.n_tiles == 2 and cc.token is not None and stash_nodes(cc.core.cell, cc.core.bwd)
    assert bool(kept_values(cc.core.cell, cc.core.bwd, cc.plan)) == (chunk == 1)
    with record_accesses() as launches:
        _run(cc, layer, 2, 3)
    assert len(launches) == 4 and all(len({p for p, _ in x["stores"]}) >= 2 for x in launches)
    for k, launch in enumerate(launches):
        assert not conflicts(launch), f"launch {k}: {conflicts(launch)}"


def test_the_recorder_sees_a_shared_region():
    """The check itself: two programs writing one scratch region are reported."""
    import triton
    import triton.language as tl

    @triton.jit
    def shared(p, N: tl.constexpr):
        i = tl.program_id(0)
        tl.store(p + (i // 2) * N + tl.arange(0, N), tl.zeros([N], tl.float32) + i)

    buf = torch.zeros(8)
    with record_accesses() as launches:
        shared[(4,)](buf, N=4)
    assert conflicts(launches[0]) == ["8 addresses stored by several programs"]
