"""The chunked strategy's two walks over the chunks (``chunk_states_kernel``, ``chunk_dstates_kernel``)
with the key axis in blocks (``LAUNCH["walk_bk"]``): without a rank-one correction each block of key
rows of the state evolves apart, so a program holds a [BK, BV] block of it; with one the key axis
stays whole. Against the recurrence (float64) and the reference layer, at key sizes that are not a
multiple of the block, the launches they take, and the chunk-local cumulative log-decays they (and
the output, dv and dq/dk kernels) read (``LAUNCH["walk_cumsum"]``, ``LAUNCH["parallel_cumsum"]``) or
scan themselves."""

import pytest
import torch
from archdsl.codegen.run import chunked_backward, chunked_common, chunked_kernels
from archdsl.codegen.run.chunked_backward import chunked_backward as backward
from archdsl.codegen.run.chunked_kernels import chunked_forward
from archdsl.codegen.run.chunked_torch import sequential_torch
from kernel_harness import compare_backends, rel_rms
from test_chunked import layer_of, random_problem

WALKS = {"chunk_states_kernel": chunked_kernels, "chunk_dstates_kernel": chunked_backward}
#: the walks ``assert_walks_match_the_recurrence`` launches: the forward's, then the backward's (which,
#: given no kept states, reruns the forward's first)
ORDER = ["chunk_states_kernel", "chunk_states_kernel", "chunk_dstates_kernel"]


class Launches:
    """Stands in for a kernel: records each launch's grid and key block, then launches the kernel."""

    def __init__(self, real, name: str, seen: list):
        self.real, self.name, self.seen = real, name, seen

    def __getitem__(self, grid):
        def launch(*args, **kw):
            self.seen.append((self.name, tuple(grid), kw["BK"]))
            return self.real[grid](*args, **kw)

        return launch


def record_walks(monkeypatch) -> list:
    """The walks' launches from here on: (kernel name, grid, key block)."""
    seen = []
    for name, mod in WALKS.items():
        monkeypatch.setattr(mod, name, Launches(getattr(mod, name), name, seen))
    return seen


def recurrence_with_grads(lw, q, k, v, ab, h0, do, dht):
    """(o, final state, [dlw, dq, dk, dv, *dab, dh0]) of the step-by-step recurrence in float64."""
    xs = [x.double().requires_grad_(True) for x in (lw, q, k, v, *ab, h0)]
    o, hT = sequential_torch(xs[0], xs[1], xs[2], xs[3], xs[4:-1], xs[-1])
    grads = torch.autograd.grad([o, hT], xs, [do.double(), dht.double()])
    return o, hT, grads


def assert_walks_match_the_recurrence(lw, q, k, v, ab, h0):
    """fp32 kernels (exact fp32 products, chunk 16) against the float64 recurrence: output, final
    state and every gradient (log-decays, q, k, v, a, b, initial state) within 1e-5 relative RMS."""
    o, hT = chunked_forward(lw, q, k, v, ab, h0, 16, "ieee")
    do, dht = torch.randn_like(o), torch.randn_like(hT)
    o_ref, hT_ref, expected = recurrence_with_grads(lw, q, k, v, ab, h0, do, dht)
    assert rel_rms(o, o_ref) < 1e-5 and rel_rms(hT, hT_ref) < 1e-5
    got = backward(lw, q, k, v, ab, h0, do, dht, 16, "ieee")
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and rel_rms(g, e) < 1e-5


@pytest.mark.parametrize(
    "K, walk_bk, blocks",
    [(40, 16, (3, 16)), (18, 64, (1, 32)), (40, None, (1, 64))],
    ids=["three-key-blocks", "key-smaller-than-block", "key-whole"],
)
@pytest.mark.parametrize("scalar", [True, False], ids=["head-decay", "key-decay"])
@pytest.mark.parametrize(
    "walks, parallel", [(True, True), (True, False), (False, True)], ids=["cumsum", "cumsum-walks", "scan"]
)
def test_split_walks_match_the_recurrence(walks, parallel, scalar, K, walk_bk, blocks, monkeypatch):
    """Without a correction, key size 40 in blocks of 16 (the last half full), 18 in one block of 32
    (the block clamped to the padded key size) and 40 whole (``walk_bk`` None); value size 40 in the
    walks' blocks of 16 (three, the last half full); 37 steps (two chunks of 16 and a partial one), a
    given initial state. Each walk launches (B·H, value blocks, key blocks) programs. The cumulative
    log-decays read by the walks and the kernels over every chunk, by the walks only, or by none."""
    monkeypatch.setitem(chunked_common.LAUNCH, "walk_cumsum", walks)
    monkeypatch.setitem(chunked_common.LAUNCH, "parallel_cumsum", parallel)
    monkeypatch.setitem(chunked_common.LAUNCH, "walk_bk", walk_bk)
    monkeypatch.setitem(chunked_common.LAUNCH, "states_bv", 16)
    monkeypatch.setitem(chunked_common.LAUNCH, "dstates_bv", 16)
    seen = record_walks(monkeypatch)
    lw, q, k, v, ab, h0 = random_problem(scalar, False, torch.float32, T=37, K=K, V=40, seed=5)
    assert_walks_match_the_recurrence(lw, q, k, v, ab, h0)
    NK, BK = blocks
    B, _, H, _ = q.shape
    assert seen == [(name, (B * H, 3, NK), BK) for name in ORDER]


@pytest.mark.parametrize("cumsum", [True, False], ids=["cumsum", "scan"])
def test_walks_hold_the_key_axis_whole_with_a_correction(cumsum, monkeypatch):
    """A delta rule's walks contract the state over the key axis (U = W S + U₀, Wᵀ dU): one block of
    the padded key size whatever ``walk_bk`` says, and the result still matches the recurrence."""
    monkeypatch.setitem(chunked_common.LAUNCH, "walk_cumsum", cumsum)
    monkeypatch.setitem(chunked_common.LAUNCH, "walk_bk", 16)
    seen = record_walks(monkeypatch)
    lw, q, k, v, ab, h0 = random_problem(False, True, torch.float32, T=37, K=18, V=20, seed=6)
    assert_walks_match_the_recurrence(lw, q, k, v, ab, h0)
    assert seen == [(name, (6, 1, 1), 32) for name in ORDER]


def test_walk_key_block_is_clamped(monkeypatch):
    """``walk_launch``'s key block: ``walk_bk`` rounded up to a power of two, at least 16 (``tl.dot``'s
    minimum), at most the padded key size; no key size (a correction), None or 0: ``meta``'s block."""
    meta = dict(BK=128, BV=64, num_warps=4, C=16)
    for walk_bk, K, BK in [(64, 128, 64), (32, 128, 32), (8, 128, 16), (48, 128, 64), (64, 40, 64)]:
        monkeypatch.setitem(chunked_common.LAUNCH, "walk_bk", walk_bk)
        assert chunked_common.walk_launch("states", meta, 256, K)["BK"] == BK
    assert chunked_common.walk_launch("dstates", dict(meta, BK=16), 256, 5)["BK"] == 16
    assert chunked_common.walk_launch("states", meta, 256)["BK"] == 128
    for whole in (None, 0):  # 0: benchmarks/chunked.py's --launch walk_bk=0
        monkeypatch.setitem(chunked_common.LAUNCH, "walk_bk", whole)
        assert chunked_common.walk_launch("dstates", meta, 256, 128)["BK"] == 128
    walk = chunked_common.walk_launch("states", meta, 40, 40)
    assert chunked_common.walk_grid(6, 40, 40, dict(walk, BK=16, BV=16)) == (6, 3, 3)


@pytest.mark.parametrize(
    "name, sizes", [("gla", {"n": 40}), ("mamba2", {"dstate": 40})], ids=["key-decay", "head-decay"]
)
def test_layer_with_split_walks_matches_reference(name, sizes, monkeypatch):
    """A whole layer (GLA: a decay per key channel; Mamba2: one per head) with a key axis of 40 in
    blocks of 16, 37 steps in chunks of 16: output, final state and every gradient (input,
    parameters, initial state) against the reference, fp32 ≤ 1e-5 (the harness)."""
    monkeypatch.setitem(chunked_common.LAUNCH, "walk_bk", 16)
    seen = record_walks(monkeypatch)
    compare_backends(layer_of(name, **sizes), B=2, T=37, chunk=16, strategy="chunked")
    assert {(n, grid[2], bk) for n, grid, bk in seen} == {(n, 3, 16) for n in WALKS}


@pytest.mark.parametrize("shape", [(2, 37, 3), (2, 37, 3, 130)], ids=["head-decay", "key-decay"])
def test_cumulative_decays_are_chunk_local_cumulative_sums(shape, monkeypatch):
    """``cumulative_decays``: the log-decays' inclusive cumulative sums restarted at every chunk of 16 (37
    steps: the last chunk partial; 130 key channels: three blocks of 64), fp32 and contiguous, from
    strided bf16 log-decays; with ``walk_cumsum`` off, the log-decays themselves."""
    B, T, H = shape[:3]
    lw = -torch.rand(B, T, 2 * H, *shape[3:]).bfloat16()[:, :, ::2]
    gc, cum = chunked_kernels.cumulative_decays(lw, 16)
    pad = torch.zeros(B, 48 - T, *lw.shape[2:])
    chunks = torch.cat([lw.float(), pad], 1).unflatten(1, (3, 16))
    expected = chunks.cumsum(2).flatten(1, 2)[:, :T]
    assert cum and gc.dtype == torch.float32 and gc.is_contiguous()
    assert torch.allclose(gc, expected, rtol=1e-6, atol=1e-6)
    monkeypatch.setitem(chunked_common.LAUNCH, "walk_cumsum", False)
    assert chunked_kernels.cumulative_decays(lw, 16) == (lw, False)


@pytest.mark.parametrize("scalar", [True, False], ids=["head-decay", "key-decay"])
@pytest.mark.parametrize("lowrank", [False, True], ids=["write", "delta"])
def test_output_and_dv_take_their_own_value_blocks(lowrank, scalar, monkeypatch):
    """``output_bv``, ``dv_bv``, ``dv_warps`` (``kernel_launch``): without a rank-one correction the
    output kernel and ``chunk_dv_kernel`` run in three value blocks of 16 (value size 40) where the
    others take one of 64; with one, both take the common block. Either way the recurrence's output
    and gradients."""
    for key, value in [("output_bv", 16), ("dv_bv", 16), ("dv_warps", 2)]:
        monkeypatch.setitem(chunked_common.LAUNCH, key, value)
    monkeypatch.setitem(chunked_common.LAUNCH, "joint", False)  # a delta rule's dv kernel, not dr's
    launch = chunked_common.kernel_launch("dv", dict(BV=64, num_warps=4), 40)
    assert launch == dict(BV=16, num_warps=2)
    assert chunked_common.kernel_launch("dqa", dict(BV=64, num_warps=4), 8)["BV"] == 16  # padded V
    seen = []
    for name, mod in [("chunk_output_kernel", chunked_kernels), ("chunk_dv_kernel", chunked_backward)]:
        monkeypatch.setattr(mod, name, Launches(getattr(mod, name), name, seen))
    lw, q, k, v, ab, h0 = random_problem(scalar, lowrank, torch.float32, T=37, K=18, V=40, seed=7)
    assert_walks_match_the_recurrence(lw, q, k, v, ab, h0)
    blocks = 1 if lowrank else 3
    assert [(name, grid[2]) for name, grid, _ in seen] == [
        ("chunk_output_kernel", blocks),
        ("chunk_dv_kernel", blocks),
    ]


def test_parallel_kernels_read_cumulative_decays_per_key_channel(monkeypatch):
    """``parallel_decays``: with ``parallel_cumsum`` (on by default) the output, dv and dq/dk kernels
    read the cumulative log-decays where they were computed and the decay is one per key channel; a
    head's decay, the switch off or no cumulative log-decays leave them the log-decays."""

    def reads(lw, decays):
        x, cum = chunked_kernels.parallel_decays(lw, decays)
        return "G" if x is decays[0] and cum else "g" if x is lw and not cum else "?"

    lw, gc, head = torch.zeros(2, 5, 3, 4), torch.ones(2, 5, 3, 4), torch.zeros(2, 5, 3)
    assert reads(lw, (gc, True)) == "G"  # on by default
    monkeypatch.setitem(chunked_common.LAUNCH, "parallel_cumsum", False)
    assert reads(lw, (gc, True)) == "g"
    monkeypatch.setitem(chunked_common.LAUNCH, "parallel_cumsum", True)
    assert reads(lw, (lw, False)) == "g"
    assert reads(head, (head + 1, True)) == "g"
