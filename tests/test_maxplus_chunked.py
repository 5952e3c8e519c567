"""Max-plus states as prefix scans (codegen/maxplus.py, codegen/run/maxplus_scan.py) and several linear
states, one chunked op each (codegen/linear.py): mLSTM's stabiliser, matrix memory and normaliser."""

from pathlib import Path

import pytest
import torch
from archdsl.codegen.classify import classification, classify
from archdsl.codegen.maxplus import max_plus_states
from archdsl.codegen.run.maxplus_scan import max_plus_scan
from archdsl.codegen.run.strategies import choose
from kernel_harness import compare_backends

from archdsl.autodiff import extract_cell
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse, parse_file

ROOT = Path(__file__).resolve().parent.parent


def sequential(a, b, s0, tie_to_b: bool):
    """``s_t = max(a_t + s_{t-1}, b_t)`` step by step; ``tie_to_b``: a tie's gradient goes to ``b_t``
    (the scan's rule), else half to each (``torch.maximum``, the reference's)."""
    s, out = s0, []
    for t in range(a.shape[1]):
        x, y = a[:, t] + s, b[:, t]
        s = torch.where(y >= x, y, x) if tie_to_b else torch.maximum(x, y)
        out.append(s)
    return torch.stack(out, 1)


def values_and_grads(f, a, b, s0, w):
    xs = [x.clone().requires_grad_(True) for x in (a, b, s0)]
    s = f(*xs)
    return s.detach(), torch.autograd.grad((s * w).sum(), xs)


def test_scan_is_the_recurrence():
    """float64, random values (no ties), an initial state: the scan's values and the gradients of a,
    b and s_0 equal the recurrence's (the reference's tie rule never fires)."""
    g = torch.Generator().manual_seed(0)
    a = -torch.rand(2, 40, 3, generator=g, dtype=torch.float64)
    b, s0, w = (torch.randn(*sh, generator=g, dtype=torch.float64) for sh in ((2, 40, 3), (2, 3), (2, 40, 3)))
    want, dwant = values_and_grads(lambda *x: sequential(*x, tie_to_b=False), a, b, s0, w)
    got, dgot = values_and_grads(max_plus_scan, a, b, s0, w)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
    for x, y in zip(dgot, dwant):
        assert torch.allclose(x, y, rtol=0, atol=1e-12)


def test_scan_ties_go_to_the_latest_maximum():
    """Small integers (exact in float64): a = 0 or -1, b from {-1, 0, 1}, s_0 = 0, so many steps tie
    (``a_t + s_{t-1} = b_t``). Values equal the recurrence's exactly, and the gradients do when its
    ties go to ``b_t`` (to the order of summation: 1e-12); with half to each (the reference's ``max``)
    they differ by O(1): another subgradient."""
    g = torch.Generator().manual_seed(1)
    a = -torch.randint(0, 2, (2, 30, 3), generator=g).double()
    b = torch.randint(-1, 2, (2, 30, 3), generator=g).double()
    s0 = torch.zeros(2, 3, dtype=torch.float64)
    w = torch.randn(2, 30, 3, generator=g, dtype=torch.float64)
    s = sequential(a, b, s0, True)
    prev = torch.cat([s0[:, None], s[:, :-1]], 1)
    assert (a + prev == b).sum() > 20  # the case is about ties
    got, dgot = values_and_grads(max_plus_scan, a, b, s0, w)
    want, dwant = values_and_grads(lambda *x: sequential(*x, tie_to_b=True), a, b, s0, w)
    assert torch.equal(got, want)
    assert all(torch.allclose(x, y, rtol=0, atol=1e-12) for x, y in zip(dgot, dwant))
    _, dhalf = values_and_grads(lambda *x: sequential(*x, tie_to_b=False), a, b, s0, w)
    assert (dgot[1] - dhalf[1]).abs().max() > 0.1


CHAINED = """
rnn chained
hyper dim = 8
axis h = 2
axis i = 4
axis j = 4
project x -> q[h, i], k[h, i], v[h, j], ig[h], fg[h]
state S[h, i, j]
state z[h]
state m[h]
z' = 0.5 * z + sigmoid(fg)
m' = max(A + m, ig)
S' = exp(-softplus(-fg) + m - m') * S + exp(ig - m') * k * v
y = sum[i](S' * q)
output y
"""


@pytest.mark.parametrize("a, scanned", [("z", False), ("-softplus(-fg)", True)])
def test_a_state_that_reads_a_state_stays_a_state(a, scanned):
    """``m' = max(z + m, ig)`` with z another (linear) state is not a prefix scan: m stays a state and
    the cell is not in the class; with a per-token ``a`` it is scanned."""
    layer = instantiate(parse(CHAINED.replace("A", a)), None, {}).layer
    cell, scans = max_plus_states(extract_cell(layer))
    assert [m.state for m in scans] == (["m"] if scanned else [])
    assert ("m" in cell.states) == (not scanned)
    if not scanned:
        assert not classification(layer).startswith("chunked")


def test_mlstm_is_chunked():
    """mLSTM: the stabiliser m a scan, C and nrm one op each, the readout after both; the strategy is
    chosen unnamed at its 100M size (key axis 192 of at least 64)."""
    spec = parse_file(ROOT / "specs/mlstm.rnn")
    got = classify(extract_cell(instantiate(spec, "test", {}).layer))
    assert [m.state for m in got.scans] == ["m"]
    assert [f.state for f in got.forms] == ["C", "nrm"] and [f.values for f in got.forms] == [("j",), ()]
    assert got.forms[0].log_w == got.forms[1].log_w and got.forms[0].k == got.forms[1].k  # shared nodes
    big = instantiate(spec, "mLSTM_100m", {}).layer
    assert choose(big, extract_cell(big)).name == "chunked"


TWO_DECAYS = """
rnn two
hyper dim = 8
axis h = 2
axis i = 4
axis j = 3
project x -> q[h, i], k[h, i], v[h, j], p[h, i], u[h, j], a[h], g[h, i]
state S[h, i, j]
state R[h, i, j]
S' = exp(-softplus(a)) * S + k * v
R' = sigmoid(g) * R + p * u
y = sum[i](S' * q) * tanh(sum[i](R' * p))
output y
"""


def test_two_linear_states_of_different_decays():
    """One decay per head and one per key channel, different keys and queries: one op each, the
    readout's product and tanh after both; whole layer against the reference (chunk 16, a full chunk
    and a partial one, initial states given)."""
    layer = instantiate(parse(TWO_DECAYS), None, {}).layer
    got = classify(extract_cell(layer))
    assert [(f.state, f.scalar_decay) for f in got.forms] == [("S", True), ("R", False)]
    compare_backends(layer, B=2, T=17, chunk=16, strategy="chunked")


def test_coupled_linear_states_are_refused():
    layer = instantiate(parse(TWO_DECAYS.replace("* R + p * u", "* R + p * u + S")), None, {}).layer
    assert classification(layer) == "the update of R reads the state S: not linear in one state"
