"""The chunked forward's triangular inverse (``chunk_prep_kernel``: 16×16 diagonal blocks by forward
substitution, joined pairwise 16 → 32 → … → C) against float64 ``solve_triangular`` of the same
matrix, ``T = (I - M_ab)⁻¹`` with ``M_ab[t, τ] = Σ_i b_t[i] a_τ[i] Γ_{t-1}[i] / Γ_τ[i]`` (τ < t)."""

import pytest
import torch
from archdsl.codegen.run.chunked_kernels import chunk_states
from archdsl.codegen.run.chunked_torch import _chunks, _decay_matrix


def expected_inverse(lw, a, b, C: int) -> torch.Tensor:
    """(I - M_ab)⁻¹ of every chunk in float64, [B·H, N, C, C] (the kernel's layout)."""
    g = _chunks(lw.double(), C)
    G = g.cumsum(3)
    L = _decay_matrix(_chunks(b.double(), C), G - g, _chunks(a.double(), C), G, lw.dim() == 3, strict=True)
    eye = torch.eye(C, dtype=torch.float64)
    T = torch.linalg.solve_triangular(eye - L, eye.expand_as(L), upper=False, unitriangular=True)
    return T.flatten(0, 1)


def worst_error(lw, k, a, b, C: int) -> float:
    """The largest relative RMS error of one chunk's strictly lower T (its diagonal must be exactly 1,
    above it exactly 0); two chunks, the second one three steps short."""
    B, T, H, K = k.shape
    v = torch.randn(B, T, H, 16, generator=torch.Generator().manual_seed(1))
    inv = chunk_states(lw, k, k, v, [a, b], torch.zeros(B, H, K, 16), C, "ieee")[4]
    want = expected_inverse(lw, a, b, C)
    assert inv.shape == want.shape
    eye = torch.eye(C)
    assert torch.equal(inv.triu(), eye.expand_as(inv))
    err = (inv.double().tril(-1) - want.tril(-1)).flatten(2).norm(dim=2) / want.tril(-1).flatten(2).norm(
        dim=2
    )
    return err.max().item()


@pytest.mark.parametrize("C", [16, 32, 64])
@pytest.mark.parametrize("scalar", [True, False], ids=["head-decay", "key-decay"])
def test_inverse_matches_float64(C, scalar):
    g = torch.Generator().manual_seed(C)
    B, T, H, K = 1, 2 * C - 3, 2, 18
    lw = -0.3 * torch.rand(B, T, H, *(() if scalar else (K,)), generator=g)
    k, a, b = (0.3 * torch.randn(B, T, H, K, generator=g) for _ in range(3))
    assert worst_error(lw, k, a, b, C) < 1e-5


@pytest.mark.parametrize("K", [4, 16])
def test_inverse_of_undamped_delta_rule(K):
    """E88 with the identity nonlinearity: unit-norm keys, write strength 1, no decay (a = -k, b = k:
    T's rows sum products of projections, never damped); chunks of 64."""
    g = torch.Generator().manual_seed(K)
    B, T, H, C = 1, 125, 2, 64
    k = torch.randn(B, T, H, K, generator=g)
    k = k / k.norm(dim=-1, keepdim=True)
    assert worst_error(torch.zeros(B, T, H), k, -k, k, C) < 1e-5
