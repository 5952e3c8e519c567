"""The persistent strategy after the linear rewrites (codegen/rewrite.py): a state-free addend of a
contraction's operand hoisted out of the recurrence, a chain through parameter matrices folded into
one matrix. Each rewritten cell is chosen persistent and matches the reference (which evaluates the
spec as written); a cell that the rewrites' conditions exclude stays on the per-step GEMM."""

import re

import pytest
import torch
from kernel_harness import compare_backends

from archdsl.autodiff import extract_cell
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse, parse_file

#: d = 80: the matrices' blocks (128 x 128, 128 x 64) leave the registers, so the cell is dense
HEAD = """
rnn rw
hyper dim = 40
let d = 80
axis i = d
axis j = d
axis r = 40
state h[i]
"""

#: the declarations a step may read, each declared where the step reads it (an unused one is an error)
DECLARE = {
    "wx": "project x -> wx[i]",
    "z": "project x -> z[i]",
    "Ut": "project x -> Ut[i, r]",
    "W": "param W[i, j] = xavier()",
    "U": "param U[i, r] = xavier()",
    "V": "param V[r, j] = xavier()",
    "b": "param b[i] = zeros()",
}

TAIL = """
y = h'
output y
"""

# the operand: a per-token addend subtracted from the state (a sign to carry), or a parameter-only
# addend (hoisted as a constant, computed once per forward)
OPERAND_SUM = {
    "token": "h' = tanh(sum[j](W * (z[j] - h[j])) + wx)",
    "const": "h' = tanh(sum[j](W * (h[j] + b[j])) + wx)",
}
# U (V h): the second factor U is a parameter, written inline or through a named value
CHAIN = {
    "inline": "h' = tanh(sum[r](U * sum[j](V * h[j])) + wx)",
    "named": "vh = sum[j](V * h[j])\nh' = tanh(sum[r](U * vh) + wx + z)",
}
STAY_DENSE = {
    # the addend reads the state: nothing can leave the recurrence
    "addend reads the state": "h' = tanh(sum[j](W * (tanh(h[j]) + h[j])) + wx)",
    # the second factor is per token (projected), not a parameter: no matrix to fold
    "second factor per token": "h' = tanh(sum[r](Ut * sum[j](V * h[j])) + wx)",
}


def layer_of(update: str):
    words = set(re.findall(r"\w+", update))
    declared = "\n".join(line for name, line in DECLARE.items() if name in words)
    return instantiate(parse(f"{HEAD}{declared}\n{update}{TAIL}", "rw.rnn")).layer


def compiled(layer, strategy=None):
    from archdsl.codegen import build_cell

    return build_cell(layer, 4, None, 1, strategy)


@pytest.mark.parametrize("form", sorted(OPERAND_SUM))
def test_operand_sum_is_persistent_and_matches_the_reference(form):
    from archdsl.codegen.run.persistent import PersistentCell

    layer = layer_of(OPERAND_SUM[form])
    cc = compiled(layer)
    assert isinstance(cc, PersistentCell) and cc.rewrite is not None
    assert list(cc.rewrite.hoisted) == [f"{form}:0"]  # a per-token input, or a constant
    compare_backends(layer, B=2, T=5, chunk=4)


@pytest.mark.parametrize("form", sorted(CHAIN))
def test_low_rank_chain_is_folded_persistent_and_matches_the_reference(form):
    from archdsl.codegen.run.persistent import PersistentCell

    layer = layer_of(CHAIN[form])
    cc = compiled(layer)
    assert isinstance(cc, PersistentCell) and cc.rewrite is not None
    assert cc.cell.consts["const:0"] == ("i", "j")  # sum[r](U * V), one d x d matrix
    assert [m.const for m in cc.matvecs] == ["const:0"]  # one contraction per step
    compare_backends(layer, B=2, T=5, chunk=4)  # dU and dV through the fold


def test_the_rewrites_compose():
    """A chain whose operand also has a per-token addend: folded, then split."""
    layer = layer_of("h' = tanh(sum[r](U * sum[j](V * (z[j] + h[j]))) + wx)")
    cc = compiled(layer)
    assert sorted(cc.rewrite.hoisted) == ["const:0", "token:0"]
    compare_backends(layer, B=2, T=4, chunk=4)


@pytest.mark.parametrize("case", sorted(STAY_DENSE))
def test_outside_the_rewrites_conditions_the_cell_stays_dense(case):
    from archdsl.codegen.rewrite import rewrite
    from archdsl.codegen.run.dense import DenseCell

    layer = layer_of(STAY_DENSE[case])
    assert rewrite(extract_cell(layer)) is None  # declined by the rewrite itself, not only the layout
    assert isinstance(compiled(layer), DenseCell)


#: E42 at d = 80; E66 at d = 132, where its rank r = 33 takes its matrices out of the registers
DIM = {"e42": 40, "e66": 66}


def wide(name: str):
    return instantiate(parse_file(f"specs/{name}.rnn"), overrides={"dim": DIM[name], "expansion": 2}).layer


@pytest.mark.parametrize("name", sorted(DIM))
def test_e42_e66_persistent_against_the_reference(name):
    """fp32 at the harness's batch 3 and 9 steps, bf16 at 2 x 5: outputs, states, every gradient."""
    from archdsl.codegen.run.persistent import PersistentCell

    layer = wide(name)
    assert isinstance(compiled(layer), PersistentCell)
    compare_backends(layer, B=3, T=9, chunk=4)
    compare_backends(layer, B=2, T=5, dtype=torch.bfloat16, chunk=4)


@pytest.mark.parametrize("name", sorted(DIM))
def test_e42_e66_dense_when_forced(name):
    from archdsl.codegen.run.dense import DenseCell

    layer = wide(name)
    assert isinstance(compiled(layer, "dense"), DenseCell)
    compare_backends(layer, B=2, T=3, chunk=4, strategy="dense")


@pytest.mark.parametrize("name", sorted(DIM))
def test_e42_e66_choose_persistent_at_their_default_size(name):
    from archdsl.codegen.run.strategies import choose

    layer = instantiate(parse_file(f"specs/{name}.rnn")).layer
    assert choose(layer, extract_cell(layer)).name == "persistent"
