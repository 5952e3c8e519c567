"""One harness for every spec: the compiled layer against the reference layer.

Compares the output, every final state and every gradient (input, parameters, initial state) with a
relative-RMS-error ratio (flash-linear-attention's ``assert_close`` style): NaN never passes, and one
log line per tensor says how close it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from archdsl.layer import RecurrentLayer

#: Per strategy, the specs on which a property that holds for every spec (decoding equals the
#: forward, packed sequences equal one by one, a single step) is checked by default; the whole
#: cross product of specs and strategies runs under ``pytest -m exhaustive`` (or ARCHDSL_EXHAUSTIVE=1).
#: Each spec is there for a code path the others do not take; every spec's kernels are still checked
#: against the reference in tests/test_kernels.py, and every spec's reference in the full set.
REPRESENTATIVE = {
    "loop": {
        "e1": "a vector state through a spectral-normalised matrix",
        "e10": "two states of different shapes (h[i], m[c, i])",
        "e88": "a matrix state per head, tanh around the delta-rule update",
        "gdn": "short convolutions (their history carried across calls) and the gated delta rule",
        "gru": "a reset gate inside the recurrent product",
        "lstm": "two states (h, c) and four gates",
        "mamba": "a causal conv1d and a selective scan over [i, s] (no heads axis)",
        "mlstm": "three states of different ranks and an exp/max stabiliser",
    },
    "chunked": {
        "gdn": "scalar decay per head with the delta correction, convolutions",
        "gla": "a decay per key channel, no delta correction",
        "kda": "a decay per key channel with the delta correction",
        "mamba": "a decay per channel and no heads axis",
        "mamba2": "scalar decay per head without the delta correction",
        "mlstm": "a max-plus state as a scan, two linear states (one op each) read by one readout",
    },
}


def cases_params(cases: list[tuple[Path, str]]) -> list:
    """``(spec path, strategy)`` cases as pytest parameters: those outside REPRESENTATIVE (for the
    strategies it names) are marked ``exhaustive`` (tests/conftest.py skips them by default)."""
    params = []
    for path, strategy in cases:
        default = strategy not in REPRESENTATIVE or path.stem in REPRESENTATIVE[strategy]
        marks = () if default else (pytest.mark.exhaustive,)
        params.append(pytest.param(path, strategy, id=f"{path.stem}-{strategy}", marks=marks))
    return params


TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def rel_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    a, e = actual.double(), expected.double()
    return ((a - e).pow(2).mean().sqrt() / e.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, tol: float) -> float:
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values in the kernel's result"
    err = rel_rms(actual, expected)
    print(f"{name:>24}: rel-rms {err:.2e} (tol {tol:.0e})")
    assert err <= tol or expected.abs().max() == 0 and actual.abs().max() == 0, (
        f"{name}: relative RMS error {err:.3e} > {tol:.0e}"
    )
    return err


def generic_weights(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every matrix that starts at zero (rwkv7's output map and LoRAs, as fla's) drawn
    U(±1/√fan_in): a zero matrix cuts every gradient path through it, and a comparison there would
    check nothing behind it. The other weights keep the spec's initial values."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                p.uniform_(-(p.shape[-1] ** -0.5), p.shape[-1] ** -0.5)
    return model


def chunked_op_inputs(lowrank: bool | str, B=2, T=21, H=2, K=5, V=6):
    """Random inputs of the chunked op (``codegen/run/ops.chunked_op``): log-decays [B, T, H] (one
    per head), q, k [B, T, H, K], v [B, T, H, V] and, for a rank-one correction (``lowrank``), a, b
    [B, T, H, K] (``"joint"``: b alone, the correction on k's key; ``"tied"``: σ [B, T, H] alone, the
    read vectors σ k), all requiring gradients; and an
    initial state [B, H, K, V]."""
    g = torch.Generator().manual_seed(0)
    xs = [-torch.rand(B, T, H, generator=g)]
    ab = {False: (), True: (K, K), "joint": (K,), "tied": ()}[lowrank]
    xs += [torch.randn(B, T, H, R, generator=g) for R in (K, K, V, *ab)]
    xs += [torch.randn(B, T, H, generator=g)] if lowrank == "tied" else []  # σ: read vectors σ k
    xs = [x.requires_grad_(True) for x in xs]
    return xs, torch.randn(B, H, K, V, generator=g, requires_grad=True)


def compare_backends(
    layer,
    B: int,
    T: int,
    dtype=torch.float32,
    seed: int = 0,
    chunk: int = 4,
    device: str = "cpu",
    strategy: str | None = None,
    products: str | None = None,
) -> dict[str, float]:
    """Run reference and compiled layers with the same weights; assert everything agrees.
    ``strategy``: the execution strategy to compile with (default: the first that applies);
    ``products``: the chunked strategy's (``archdsl compile --products``)."""
    torch.manual_seed(seed)
    ref = generic_weights(RecurrentLayer(layer, seed=seed)).to(device)
    opts = dict(chunk=chunk, tile=None, num_warps=1, strategy=strategy, products=products)
    ker = RecurrentLayer(layer, backend="triton", seed=seed, **opts).to(device)
    ker.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, layer.dim, device=device)
    h0 = {
        s: 0.5 * torch.randn(B, *(layer.sizes[a] for a in ax), device=device)
        for s, ax in layer.states.items()
    }
    tol = TOLERANCE[dtype]
    errors = {}

    def run(model, xx):
        xx = xx.detach().to(dtype).requires_grad_(True)
        hh = {k: v.clone().requires_grad_(True) for k, v in h0.items()}
        if dtype != torch.float32:
            model = model.to(dtype)
        y, final = model(xx, hh)
        return xx, hh, y.float(), {k: v.float() for k, v in final.items()}

    x1, h1, y1, f1 = run(ref, x)
    x2, h2, y2, f2 = run(ker, x)
    errors["y"] = assert_close("y", y2, y1, tol)
    for s in f1:
        errors[f"state {s}"] = assert_close(f"final {s}", f2[s], f1[s], tol)
    w = torch.randn_like(y1)
    loss1 = (y1 * w).sum() + sum((v * v).sum() for v in f1.values())
    loss2 = (y2 * w).sum() + sum((v * v).sum() for v in f2.values())
    names = ["dx", *(f"dh0 {s}" for s in h1), *(f"d{n}" for n, _ in ref.named_parameters())]
    g1 = torch.autograd.grad(loss1, [x1, *h1.values(), *ref.parameters()], allow_unused=True)
    g2 = torch.autograd.grad(loss2, [x2, *h2.values(), *ker.parameters()], allow_unused=True)
    for name, a, b in zip(names, g2, g1):
        assert b is not None and a is not None, f"{name}: no gradient (a silently frozen parameter?)"
        errors[name] = assert_close(name, a.float(), b.float(), tol)
        # a parameter whose reference gradient is all zero would hide a frozen parameter; the initial
        # state's may legitimately vanish over a long sequence (GRU at T 256 underflows to zero)
        assert b.abs().sum() > 0 or name.startswith("dh0"), f"{name}: zero gradient in the reference"
    return errors
