"""Every spec in specs/ is a test case of one harness (no per-spec test code).

For each spec: it checks, with all its presets; its ``test`` preset runs forward and backward through
the reference, and ``torch.autograd.gradcheck`` passes in float64 on the input, every parameter and the
initial state for every combination of its choices; the checker's parameter count equals the module's
for the defaults and every preset; changing any learned parameter changes the output.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import ROOT, SPEC_PATHS

from archdsl.lang.check_cmd import summary
from archdsl.lang.checker import check_spec, declarations, instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer, SpectralNorm

B, T = 2, 3
SN_WARMUP_ITERS = 200


def choice_combos(path) -> list[dict[str, str]]:
    """Every combination of the spec's choices, the defaults first."""
    decl = declarations(parse_file(path))
    names = list(decl.choices)
    combos = [dict(zip(names, c)) for c in itertools.product(*(decl.choices[n].options for n in names))]
    default = {n: decl.choices[n].default or decl.choices[n].options[0] for n in names}
    return [default] + [c for c in combos if c != default]


def pytest_generate_tests(metafunc):
    if "spec_case" in metafunc.fixturenames:
        cases, ids = [], []
        for path in SPEC_PATHS:
            for k, combo in enumerate(choice_combos(path)):
                cases.append((path, combo, k == 0))
                ids.append("-".join([path.stem, *combo.values()]))
        metafunc.parametrize("spec_case", cases, ids=ids)


# ---- helpers ---------------------------------------------------------------------------------------


def tiny_module(path, choices: dict) -> RecurrentLayer:
    """The spec's ``test`` preset with ``choices``, as a float64 module in eval mode."""
    inst = instantiate(parse_file(path), preset="test", overrides=choices)
    assert not inst.warnings, [w.message for w in inst.warnings]
    return RecurrentLayer(inst.layer, seed=0).double().eval()


def tiny_inputs(m: RecurrentLayer, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """x [B, T, dim] and a nonzero initial state {name: [B, *axes]} (so state gradients are exercised)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, m.ir.dim, generator=gen, dtype=torch.float64)
    state = {
        name: 0.5 * torch.randn(B, *(m.ir.sizes[a] for a in axes), generator=gen, dtype=torch.float64)
        for name, axes in m.ir.states.items()
    }
    return x, state


def converge_spectral_norms(m: RecurrentLayer, x: torch.Tensor) -> None:
    """Run the power iterations to convergence once (train mode stores the vector), then go back to eval.

    The spectral norm's gradient treats the power-iteration vectors as constants (as torch's spectral_norm
    does); that is the exact gradient of sigma_max at converged vectors, which gradcheck can then verify.
    """
    norms = [s for s in m.modules() if isinstance(s, SpectralNorm)]
    if not norms:
        return
    iters = [s.iters for s in norms]
    for s in norms:
        s.iters = SN_WARMUP_ITERS
    m.train()
    with torch.no_grad():
        m(x)
    m.eval()
    for s, k in zip(norms, iters):
        s.iters = k


def as_function(m: RecurrentLayer):
    """(x, *initial states, *parameters) -> (y, *final states), for gradcheck."""
    states = list(m.ir.states)
    names = [n for n, _ in m.named_parameters()]

    def f(x, *rest):
        state = dict(zip(states, rest[: len(states)]))
        params = dict(zip(names, rest[len(states) :]))
        y, final = torch.func.functional_call(m, params, (x,), {"state": state})
        return (y, *(final[s] for s in states))

    return f


def poly_value(poly, numbers) -> float:
    return sum(c * math.prod(numbers[s] for s in mono) for mono, c in poly.terms)


# ---- the harness -----------------------------------------------------------------------------------


def test_spec_checks(spec_path):
    spec = parse_file(spec_path)
    result = check_spec(spec)
    assert not result.warnings, [w.message for w in result.warnings]
    assert "test" in result.presets, f"{spec_path.name} needs a tiny 'preset test {{ … }}'"
    assert spec.source.startswith("#"), "a spec starts with a comment saying what it is"
    cites = "variants.md §" in spec.source or "arXiv:" in spec.source
    assert cites, "a spec cites its section of variants.md or its paper (arXiv:…)"


def test_forward_backward_gradcheck(spec_case):
    path, choices, is_default = spec_case
    m = tiny_module(path, choices)
    x, state = tiny_inputs(m)
    converge_spectral_norms(m, x)
    y, final = m(x, state=state)
    assert y.shape == (B, T, m.ir.dim) and torch.isfinite(y).all()
    for name, axes in m.ir.states.items():
        assert final[name].shape == (B, *(m.ir.sizes[a] for a in axes))
    inputs = [x, *state.values(), *(p.detach().clone() for p in m.parameters())]
    inputs = [t.requires_grad_() for t in inputs]
    # fast mode checks every (input, output) pair along a random direction: each parameter, the input
    # and each initial state on its own scale, at a few forward passes per tensor instead of per element
    assert torch.autograd.gradcheck(as_function(m), inputs, fast_mode=True)


def test_every_parameter_changes_the_output(spec_case):
    path, choices, _ = spec_case
    m = tiny_module(path, choices)
    x, state = tiny_inputs(m)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():  # move off special inits (a zero output map hides everything else)
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        w = torch.randn(B, T, m.ir.dim, generator=gen, dtype=torch.float64)
        base = (m(x, state=state)[0] * w).sum()
        for name, p in m.named_parameters():
            old = p.clone()
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            changed = (m(x, state=state)[0] * w).sum()
            p.copy_(old)
            assert abs(changed - base) > 1e-9 * (1 + abs(base)), f"{name} does not affect the output"


def test_parameter_count(spec_path):
    spec = parse_file(spec_path)
    for preset in [None, *declarations(spec).presets]:
        inst = instantiate(spec, preset=preset)
        layer = inst.layer
        with torch.device("meta"):  # counts without allocating (some presets are 500M-parameter models)
            m = RecurrentLayer(layer)
        assert sum(p.numel() for p in m.parameters()) == layer.param_count(), preset
        assert poly_value(inst.formula, layer.numbers) == layer.param_count(), (preset, str(inst.formula))


# ---- the named configurations of variants.md -------------------------------------------------------

EXACT = [("e75", "E75h4n32", 20, 98_838_400)]
#: the research code counted 99,959,520 for E88_d12h32; archdsl must agree within 0.01%
CALIBRATION = [("e88", "E88_d12h32", 20, 99_959_520, 1e-4)]
#: variants.md §4's table: (spec, preset, depth, ≈ low, ≈ high), in millions; a count must lie within 2%
TABLE = [
    ("e88", "E88_d12h32", 20, 99.96, 99.96),
    ("e88", "E88_d20h32", 20, 99.6, 99.6),
    ("e88", "E88_h32n16", 20, 101.8, 101.8),
    ("e88", "E88_h24n24", 20, 101.9, 101.9),
    ("e88", "E88_h8n64", 20, 125.6, 125.6),
    ("e75", "E75h4n32", 20, 98.8, 98.8),
    *(("e88", f"E88_h{h}n32", 20, 500, 500) for h in (48, 64, 96, 128)),
    ("e88", "E88_h32n64", 20, 506, 506),
    ("e88", "E88_h24n64", 20, 506, 506),
    *(("e88", f"E88_b{h}n32", 32, 504, 508) for h in (56, 60, 64)),
    *(("e88", p, 32, 490, 507) for p in ("E88_b40n48", "E88_b44n48", "E88_b28n64", "E88_b32n64")),
]


def lm_count(spec: str, preset: str, depth: int) -> int:
    return summary(str(ROOT / "specs" / f"{spec}.rnn"), preset, {}, depth)["params"]


@pytest.mark.parametrize(("spec", "preset", "depth", "count"), EXACT, ids=[r[1] for r in EXACT])
def test_exact_lm_count(spec, preset, depth, count):
    assert lm_count(spec, preset, depth) == count


@pytest.mark.parametrize(("spec", "preset", "depth", "count", "rel"), CALIBRATION, ids=["E88_d12h32"])
def test_calibration_lm_count(spec, preset, depth, count, rel):
    assert lm_count(spec, preset, depth) == pytest.approx(count, rel=rel)


@pytest.mark.parametrize(("spec", "preset", "depth", "low", "high"), TABLE, ids=[r[1] for r in TABLE])
def test_table_lm_count(spec, preset, depth, low, high):
    millions = lm_count(spec, preset, depth) / 1e6
    assert 0.98 * low <= millions <= 1.02 * high
