"""The strategy registry: one ordered list, the first entry that applies is chosen, a forced entry that
does not apply is refused with its reason, and every compiled cell answers the same protocol."""

from __future__ import annotations

import pytest
from archdsl.codegen import STRATEGIES, applicable, build_cell
from archdsl.codegen.run.strategies import by_name, choose
from kernel_harness import compare_backends

from archdsl.autodiff import extract_cell
from archdsl.errors import ArchdslError
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file


def layer_of(name: str, **overrides):
    return instantiate(parse_file(f"specs/{name}.rnn"), overrides=overrides).layer


def test_entries_have_distinct_names_and_the_loop_is_last():
    names = [s.name for s in STRATEGIES]
    assert len(set(names)) == len(names)
    assert names[-1] == "loop"  # the catch-all comes last


@pytest.mark.parametrize(
    ("name", "overrides", "chosen"),
    [
        ("e88", {"dim": 8, "heads": 2, "n": 3}, "loop"),
        ("e1", {"dim": 1312, "expansion": 1}, "persistent"),
    ],
)
def test_the_first_entry_that_applies_is_chosen(name, overrides, chosen):
    layer = layer_of(name, **overrides)
    cell = extract_cell(layer)
    reasons = dict((s.name, r) for s, r in applicable(layer, cell))
    assert choose(layer, cell).name == chosen
    before = [s for s in STRATEGIES[: [s.name for s in STRATEGIES].index(chosen)]]
    assert all(reasons[s.name] or s.declines(layer, cell) for s in before), reasons  # each says why not
    assert reasons[chosen] is None


def test_an_entry_that_declines_applies_but_is_not_chosen():
    """gdn is linear in its state: at a key axis of 3 the chunked form applies and is built when named,
    but the loop is chosen; at a key axis of 64 the chunked form is chosen."""
    layer = layer_of("gdn", dim=6, heads=2, n=3)
    cell = extract_cell(layer)
    assert dict((s.name, r) for s, r in applicable(layer, cell))["chunked"] is None
    assert "key axis i = 3 is below 64" in by_name("chunked").declines(layer, cell)
    assert choose(layer, cell).name == "loop"
    wide = layer_of("gdn", dim=128, heads=2, n=64)
    assert choose(wide, extract_cell(wide)).name == "chunked"
    narrow = layer_of("e88", dim=64, heads=2, n=32, nonlin="identity")
    assert choose(narrow, extract_cell(narrow)).name == "loop"
    assert build_cell(layer, None, None, 1, strategy="chunked").strategy == "chunked"
    with pytest.raises(ArchdslError, match="--chunk 8: the chunked strategy's chunk is a power of two"):
        build_cell(layer, 8, None, 1, strategy="chunked")


def test_a_forced_strategy_that_does_not_apply_says_why():
    layer = layer_of("e88", dim=8, heads=2, n=3)
    with pytest.raises(
        ArchdslError, match="--strategy persistent does not apply to 'e88': no learned matrix"
    ):
        build_cell(layer, 4, None, 1, strategy="persistent")
    with pytest.raises(ArchdslError, match="unknown strategy 'fast'; choose one of"):
        by_name("fast")


def test_a_dense_cell_runs_through_both_of_its_strategies():
    """E1 wide enough for the persistent layout: the per-step GEMM fallback, forced, agrees too."""
    layer = layer_of("e1", dim=40, expansion=2)
    names = [s.name for s, why in applicable(layer, extract_cell(layer)) if why is None]
    assert names == ["persistent", "dense"]
    for name in names:
        cc = build_cell(layer, 4, None, 1, strategy=name)
        assert cc.strategy == name and cc.path.exists() and len(cc.hash) == 16
        assert all(label and text for label, text in cc.describe())
        compare_backends(layer, B=2, T=3, chunk=4, strategy=name)


def test_compile_and_verify_take_strategy(capsys):
    from archdsl.cli import main

    assert main(["compile", "e88", "--preset", "test", "--strategy", "loop"]) == 0
    out = capsys.readouterr().out
    assert "strategy       loop: fused sequential loop" in out
    assert "not persistent no learned matrix" in out
    assert main(["compile", "e88", "--preset", "test", "--strategy", "dense"]) == 2
    err = capsys.readouterr().err
    assert "error: --strategy dense does not apply to 'e88'" in err and "Traceback" not in err
