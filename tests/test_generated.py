"""The generated module reads and runs on its own: its public function, imported from the file alone,
matches the reference; the forward kernel's step is short and written with the spec's names."""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path

import pytest
import torch
from archdsl.codegen import build_cell
from test_names import renamed

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse, parse_file
from archdsl.reference import reference_cell


def e88():
    return instantiate(parse_file("specs/e88.rnn"), "test").layer


def _import_alone(path):
    """The module from its file, as a user would load it: no archdsl import involved."""
    spec = importlib.util.spec_from_file_location(f"standalone_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_public_function_of_the_generated_module_matches_the_reference():
    layer = e88()
    path = build_cell(layer, 4, None, 1).path
    module = _import_alone(path)
    torch.manual_seed(0)
    B, T = 2, 5
    inputs = {n: torch.randn(B, T, *(layer.sizes[a] for a in ax)) for n, ax in layer.inputs().items()}
    frontier = {
        i: 0.5 * torch.randn(*(layer.sizes[a] for a in layer.graph[i].axes)) for i in layer.frontier()
    }
    ((s, ax),) = layer.states.items()
    h0 = 0.5 * torch.randn(B, *(layer.sizes[a] for a in ax))
    params = list(inspect.signature(module.e88).parameters)
    assert params[-1] == "h0" and params[: len(inputs)] == list(inputs)
    leaves = [*inputs.values(), *frontier.values(), h0]
    leaves = [x.clone().requires_grad_(True) for x in leaves]
    y, ht = module.e88(*leaves)
    _assert_matches_reference(layer, inputs, frontier, s, leaves, y, ht)


def _assert_matches_reference(layer, inputs, frontier, s, leaves, y, ht) -> None:
    """``y`` and ``ht``, computed from ``leaves`` (the inputs, the frontier values and the initial
    state, in that order), equal the reference's, and so do the gradients of every leaf."""
    ref = [x.clone().detach().requires_grad_(True) for x in leaves]
    n = len(inputs)
    y_ref, final = reference_cell(
        layer, dict(zip(inputs, ref[:n])), dict(zip(frontier, ref[n:-1])), {s: ref[-1]}
    )
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ht, final[s], rtol=1e-5, atol=1e-5)
    w = torch.linspace(-1, 1, y.numel()).view_as(y)
    grads = torch.autograd.grad((y * w).sum() + ht.sum(), leaves)
    grads_ref = torch.autograd.grad((y_ref * w).sum() + final[s].sum(), ref)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4)


def _loop_body(source: str, kernel: str) -> list[str]:
    """The lines of ``kernel``'s time loop ``for t in range(T):`` body."""
    lines = source[source.index(f"def {kernel}(") :].splitlines()
    start = next(k for k, line in enumerate(lines) if line.strip() == "for t in range(T):")
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    return [line for line in body if line.strip()]


def test_e88_forward_step_is_short_and_reads_as_the_spec():
    source = build_cell(instantiate(parse_file("specs/e88.rnn"), "E88_d12h32").layer, 16, None, 1)
    source = source.path.read_text()
    step = _loop_body(source, "e88_fwd_kernel")
    assert len(step) <= 25, "\n".join(step)
    text = "\n".join(step)
    for name in ("b_kh", "b_qh", "b_alpha", "b_delta", "b_S"):
        assert re.search(rf"\b{name}\b", text), name
    assert not re.search(r"\* 12288|\* 384\b", source), "sizes are tl.constexpr names, not magic numbers"
    assert "USE_H0" not in source and "tl.full(" not in text
    assert max(map(len, source.splitlines())) <= 110


# spec names that meet the persistent module's own words: they get a suffix and still run
CLASHES = {"wx": "hs", "z": "LAST_SYNC", "W_h": "TILED", "i": "rows_size", "j": "dot_min"}


@pytest.mark.parametrize("mapping", [{}, CLASHES], ids=["e1", "e1-renamed"])
def test_public_function_of_the_persistent_module_matches_the_reference(mapping):
    """The persistent strategy's module has the same five parts: its public function, imported from the
    file alone, takes the per-token inputs, the parameter-only values, each contraction's matrix and
    the initial state, and matches the reference (the CPU interpreter launches it one step a time)."""
    text = renamed(Path("specs/e1.rnn").read_text(), mapping) if mapping else Path("specs/e1.rnn").read_text()
    layer = instantiate(parse(text), overrides={"dim": 40, "expansion": 2}).layer
    cc = build_cell(layer, 4, None, 1, strategy="persistent")
    module = _import_alone(cc.path)
    torch.manual_seed(0)
    B, T = 2, 3
    ins = layer.inputs()  # the cell's per-token inputs (not xt: it feeds the projection to wx)
    inputs = {n: torch.randn(B, T, *(layer.sizes[a] for a in ins[n])) for n in cc.input_names}
    frontier = {
        i: 0.3 * torch.randn(*(layer.sizes[a] for a in layer.graph[i].axes)) for i in layer.frontier()
    }
    ((s, ax),) = layer.states.items()
    h0 = 0.5 * torch.randn(B, *(layer.sizes[a] for a in ax))
    leaves = [x.clone().requires_grad_(True) for x in [*inputs.values(), *frontier.values(), h0]]
    values = dict(zip(inputs, leaves))
    front = dict(zip(frontier, leaves[len(inputs) : -1]))
    consts = [*cc.const_names, *(m.const for m in cc.matvecs)]  # the public order after the inputs
    args = [values[n] for n in cc.input_names] + [front[cc.cell.const_source[c]] for c in consts]
    params = list(inspect.signature(module.e1).parameters)
    assert len(params) == len(args) + 1 and params[-1] == "h0"
    assert all(p == n or p.startswith(f"{n}_") for p, n in zip(params, cc.input_names))
    y, ht = module.e1(*args, leaves[-1])
    _assert_matches_reference(layer, inputs, frontier, s, leaves, y, ht)


def test_a_constants_gradient_is_summed_after_the_loop_only_where_nothing_else_reads_the_sum():
    """The per-token backward sums a constant's gradient over its broadcast axes once after the token
    loop (codegen/emit/token.py): the sum over h of a [h, j] value, for a constant over j. Not where
    the sum is also an input's gradient, stored at every token, nor where another value reads it."""
    from archdsl.codegen.emit.token import _sums_after_loop

    from archdsl.ir import Graph, Node, Op

    g = Graph()
    a = g.add(Node(Op.INPUT, (), ("h", "j"), "a"))
    s = g.add(Node(Op.SUM, (a,), ("j",), "h"))
    assert _sums_after_loop(g, [a, s], s, set()) == (a, [s])
    assert _sums_after_loop(g, [a, s], s, {s}) == (s, [])  # also an input's gradient
    e = g.add(Node(Op.EXP, (s,), ("j",)))
    assert _sums_after_loop(g, [a, s, e], s, set()) == (s, [])  # read again in the loop
