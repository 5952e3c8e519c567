"""The checker's tables and its one parameter formula.

Every per-step function is lowered by exactly one table (``UNARY`` or ``SUGAR``) or is one of the two
functions with rules of their own; each sugar function gives the same IR as its definition written out
in primitives; the formula ``archdsl check`` prints, evaluated at a configuration, is the layer's
parameter count.
"""

from __future__ import annotations

import math

import pytest
from conftest import SPEC_PATHS

from archdsl.ir import Op
from archdsl.lang.checker import declarations, instantiate
from archdsl.lang.elaborate import FUNCTIONS, SUGAR, UNARY
from archdsl.lang.parser import parse, parse_file

OWN_RULES = {"shift", "spectral_norm", "index", "position"}  # rules of their own in the elaborate pass


def test_every_function_has_one_lowering():
    assert not set(UNARY) & set(SUGAR) and not (set(UNARY) | set(SUGAR)) & OWN_RULES
    assert set(FUNCTIONS) == set(UNARY) | set(SUGAR) | OWN_RULES


def leaves(tree) -> set:
    if isinstance(tree, tuple):
        return {tree[0]} | set().union(*(leaves(t) for t in tree[1:]))
    return {tree}


@pytest.mark.parametrize("func", sorted(SUGAR))
def test_sugar_uses_only_what_the_call_has(func):
    """A tree reads ``b`` only for two arguments, the axis (``|i|``, SUM, SHIFT) only with one."""
    arity, takes_axis = FUNCTIONS[func]
    used = leaves(SUGAR[func])
    assert ("b" in used) == (arity == 2) and "a" in used
    assert bool(used & {"|i|", Op.SUM, Op.SHIFT}) == takes_axis
    assert all(isinstance(x, (Op, float)) or x in ("a", "b", "|i|") for x in used)


SPEC = """hyper dim = 8
axis h = 2
axis i = 3
axis c = 4
project x -> u[h, i], v[h, i]
param w[h, i, c] = ones()
state s[h, i]
y[h, i] = {expr}
s' = s + y + v * sum[c](w)
o = s'
output o
"""
#: each sugar function and its definition in primitives
WRITTEN_OUT = {
    "identity(u)": "u",
    "square(u)": "u * u",
    "silu(u)": "u * sigmoid(u)",
    "sg(u)": "u * (u * sigmoid(u))",
    "sum[i](u)": "sum[i](u)",
    "dot[i](u, v)": "sum[i](u * v)",
    "mean[i](u)": "sum[i](u) / 3",
    "l2norm[i](u)": "u / (sqrt(sum[i](u * u)) + 0.000001)",
    "conv[c](u, w)": "sum[c](shift[c](u) * w)",
}


def tree(graph, i: int):
    """A node as a nested tuple, independent of the order nodes were made in."""
    n = graph[i]
    return (n.op, n.axes, n.attr, tuple(tree(graph, a) for a in n.args))


def meaning(expr: str):
    layer = instantiate(parse(SPEC.format(expr=expr), "sugar.rnn")).layer
    g = layer.graph
    return (
        tree(g, layer.next_state["s"]),
        tree(g, layer.output_node),
        {k: tree(g, v) for k, v in layer.sequence.items()},
    )


@pytest.mark.parametrize("sugar", sorted(WRITTEN_OUT))
def test_sugar_is_its_definition(sugar):
    assert meaning(sugar) == meaning(WRITTEN_OUT[sugar])


def test_every_sugar_function_is_written_out():
    assert {s.split("(")[0].split("[")[0] for s in WRITTEN_OUT} == set(SUGAR) - {"max", "min"}


@pytest.mark.parametrize("path", SPEC_PATHS, ids=lambda p: p.stem)
def test_formula_is_the_count(path):
    """``param_formula`` over symbols, evaluated at each configuration, is ``param_count``."""
    spec = parse_file(path)
    for preset in [None, *declarations(spec).presets]:
        inst = instantiate(spec, preset=preset)
        numbers = inst.layer.numbers
        value = sum(c * math.prod(numbers[s] for s in mono) for mono, c in inst.formula.terms)
        count = inst.layer.param_count()
        assert math.isclose(value, count, rel_tol=1e-9), (preset, str(inst.formula), count)
