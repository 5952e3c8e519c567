"""The fused loop's backward hands each per-token gradient over in one of three ways, by how many
programs hold a part of each element (the tiles of the split axes the input lacks): one program
stores it as it is, two add their parts in place (atomically; the same bits in either order), more
store a part each, summed after the kernel. Each way against the reference, on E88 whose key-side
inputs (k, q, the decay) lack the split value axis."""

from __future__ import annotations

import pytest
from op_oracles import default_params, kernel_vs_reference, random_inputs

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file


def e88():
    """Value axis of 6: tiles of 8, 4 and 2 make 1, 2 and 3 programs per head (the last ones padded)."""
    return instantiate(parse_file("specs/e88.rnn"), "test").layer


@pytest.mark.parametrize(("tile", "parts"), [(8, 1), (4, 2), (2, 3)])
def test_gradients_shared_by_programs_match_the_reference(tile, parts):
    from archdsl.codegen import build_cell

    layer = e88()
    cc = build_cell(layer, 4, tile, 1)
    assert cc.plan.tiles["j"] == parts
    source = cc.path.read_text()
    bwd = source[source.index("def e88_bwd_kernel") : source.index("def e88_token_fwd(")]
    assert ("tl.atomic_add(" in bwd) == (parts == 2)
    assert (".sum(2)" in source) == (parts > 2)
    # B 2, T 11: three checkpoint segments of 4, the last partial
    kernel_vs_reference(layer, random_inputs(layer, 2, 11), default_params(layer), cell=cc, tol=1e-4)
