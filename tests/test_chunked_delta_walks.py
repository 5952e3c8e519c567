"""The delta rule's walks over the chunks (codegen/run/chunked_walks.py): the state-independent terms
X_n = K_endᵀ V and Y_n = Q̃ᵀ dO + Wᵀ Q_aᵀ dO for every chunk at once, the walks doing the rest.

Problems shaped like gdn (a decay per head, a = -α β k̂, b = k̂), E88 with the identity (a = -k̂,
b = k̂, write strength 1) and kda (a decay per key channel, b = α ⊙ k̂), in fp32 kernels against the
float64 recurrence step by step (``sequential_torch``) and its autograd: output, final state and every
gradient (log-decays, q, k, v, a, b, initial state) within 1e-5 relative RMS, at lengths around
chunks of 16, key size 19 (two key blocks of 16 in the terms' kernels) and value size 21 (two value
blocks of 16). Each test also checks which kernels ran: the new ones, never the old walks' LOWRANK
branch (``chunk_states_kernel``, ``chunk_dstates_kernel``), which forms without a correction still use.
"""

from pathlib import Path

import pytest
import torch
from archdsl.codegen.run.chunked_torch import sequential_torch
from kernel_harness import compare_backends, rel_rms

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file

ROOT = Path(__file__).resolve().parent.parent
NEW = (
    "chunk_writes_kernel",
    "chunk_states_delta_kernel",
    "chunk_dwrites_kernel",
    "chunk_dstates_delta_kernel",
)
OLD = ("chunk_states_kernel", "chunk_dstates_kernel")


class Launches:
    """Counts the launches (``kernel[grid](...)``) of the walks' kernels, old and new, by name."""

    def __init__(self, monkeypatch):
        from archdsl.codegen.run import chunked_backward, chunked_kernels, chunked_walks

        self.names = []
        homes = {chunked_walks: NEW, chunked_kernels: OLD[:1], chunked_backward: OLD[1:]}
        for module, names in homes.items():
            for name in names:
                monkeypatch.setattr(module, name, self.spy(getattr(module, name), name))

    def spy(self, kernel, name: str):
        launches = self

        class Spy:
            def __getitem__(self, grid):
                launches.names.append(name)
                return kernel[grid]

        return Spy()

    def ran(self) -> set[str]:
        return set(self.names)


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def delta_problem(form: str, T: int, K: int = 19, V: int = 21, seed: int = 0):
    """(lw, q, k, v, [a, b], h0) in float64 for one of the delta rules above; B 2, H 2."""
    g = torch.Generator().manual_seed(seed)
    B, H = 2, 2

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    kh, q, v, h0 = unit(r(B, T, H, K)), unit(r(B, T, H, K)) / K**0.5, r(B, T, H, V), 0.5 * r(B, H, K, V)
    beta = torch.sigmoid(r(B, T, H, 1))
    if form == "gdn":
        lw = -torch.rand(B, T, H, generator=g, dtype=torch.float64)
        return lw, q, beta * kh, v, [-lw.exp()[..., None] * beta * kh, kh], h0
    if form == "e88-identity":  # S' = α S + k̂ (v - Sᵀ k̂)ᵀ, α close to 1
        lw = -0.05 * torch.rand(B, T, H, generator=g, dtype=torch.float64)
        return lw, q, kh, v, [-kh, kh], h0
    assert form == "kda"  # S' = α ⊙ S + β k̂ (v - (α ⊙ S)ᵀ k̂)ᵀ, α per key channel
    lw = -torch.rand(B, T, H, K, generator=g, dtype=torch.float64)
    return lw, q, beta * kh, v, [-beta * kh, lw.exp() * kh], h0


@pytest.fixture
def blocks(monkeypatch):
    """Value blocks of 16 in every kernel and the walks, key blocks of 16 in the terms' kernels."""
    from archdsl.codegen.run import chunked_common, chunked_walks

    monkeypatch.setitem(chunked_common.LAUNCH, "bv", 16)
    monkeypatch.setattr(chunked_walks, "TERMS_BK", 16)


#: (form, T): shorter than one chunk, a partial last chunk, one token past a chunk, eight chunks and two
#: tokens (E88's undamped corrections by default, the others under ``-m exhaustive``)
CASES = [
    pytest.param(form, T, id=f"{form}-{T}", marks=[pytest.mark.exhaustive] if long else [])
    for form in ("gdn", "e88-identity", "kda")
    for T in (1, 63, 65, 130)
    for long in [T == 130 and form != "e88-identity"]
]


@pytest.mark.parametrize("form, T", CASES)
def test_delta_walks_match_the_recurrence(form, T, blocks, monkeypatch):
    """fp32 kernels (exact fp32 products, chunks of 16), a given initial state, against float64."""
    from archdsl.codegen.run.chunked_backward import chunked_backward
    from archdsl.codegen.run.chunked_kernels import chunked_forward

    lw, q, k, v, ab, h0 = delta_problem(form, T)
    xs = [x.clone().requires_grad_(True) for x in (lw, q, k, v, *ab, h0)]
    o1, s1 = sequential_torch(xs[0], xs[1], xs[2], xs[3], xs[4:6], xs[6])
    do, dht = torch.randn_like(o1), torch.randn_like(s1)
    expected = torch.autograd.grad([o1, s1], xs, [do, dht])
    launches = Launches(monkeypatch)
    f = [x.float() for x in (lw, q, k, v, *ab, h0, do, dht)]
    o2, s2 = chunked_forward(*f[:4], f[4:6], f[6], 16, "ieee")
    assert launches.ran() == set(NEW[:2])
    got = chunked_backward(*f[:4], f[4:6], *f[6:], 16, "ieee")
    assert launches.ran() == set(NEW)
    assert rel_rms(o2, o1) < 1e-5 and rel_rms(s2, s1) < 1e-5
    assert len(got) == len(expected) == 7
    for name, a, b in zip(("lw", "q", "k", "v", "a", "b", "h0"), got, expected):
        assert rel_rms(a, b) < 1e-5, name


@pytest.mark.parametrize("lowrank", [False, True], ids=["write", "delta"])
def test_only_delta_rules_take_the_new_walks(lowrank, blocks, monkeypatch):
    """Forward and backward (the backward rerunning the forward's kernels): a delta rule launches the
    new kernels once each and neither old walk; a form without a correction only the old walks."""
    from archdsl.codegen.run import chunked_common
    from archdsl.codegen.run.chunked_backward import chunked_backward
    from archdsl.codegen.run.chunked_kernels import chunked_forward

    monkeypatch.setitem(chunked_common.LAUNCH, "keep", False)
    lw, q, k, v, ab, h0 = (x.float() if torch.is_tensor(x) else x for x in delta_problem("gdn", 20))
    ab = [x.float() for x in ab] if lowrank else []
    launches = Launches(monkeypatch)
    o, ht = chunked_forward(lw, q, k, v, ab, h0, 16, "ieee")
    chunked_backward(lw, q, k, v, ab, h0, torch.randn_like(o), torch.randn_like(ht), 16, "ieee")
    if lowrank:
        assert sorted(launches.names) == sorted([*NEW[:2], *NEW])  # the rerun forward, then its own
    else:
        assert sorted(launches.names) == sorted([*OLD[:1], *OLD])


def spec_layer(name: str, **overrides):
    return instantiate(parse_file(ROOT / "specs" / f"{name}.rnn"), "test", overrides).layer


@pytest.mark.parametrize(
    "name, overrides",
    [("gdn", {"heads": 3}), ("e88", {"nonlin": "identity"}), ("kda", {})],
    ids=["gdn", "e88-identity", "kda"],
)
def test_delta_layers_take_the_new_walks(name, overrides, monkeypatch):
    """Whole layers (gdn, E88 with the identity, kda: a decay per key channel) against the reference
    at T 20 (chunks of 16: one and a partial one), every gradient, through the new walks only; the
    longer lengths of gdn and E88 in tests/test_chunked.py take the same path."""
    launches = Launches(monkeypatch)
    compare_backends(spec_layer(name, **overrides), B=2, T=20, chunk=16, strategy="chunked")
    assert launches.ran() == set(NEW)
