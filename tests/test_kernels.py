"""Every spec in specs/: the generated Triton kernels (CPU interpreter) against the reference."""

from pathlib import Path

import pytest
import torch
from archdsl.codegen import applicable
from kernel_harness import cases_params, compare_backends

from archdsl.autodiff import extract_cell
from archdsl.lang.checker import declarations, instantiate
from archdsl.lang.parser import parse_file

SPECS = sorted(Path(__file__).resolve().parents[1].glob("specs/*.rnn"))


def small(path: Path, **extra):
    spec = parse_file(path)
    preset = "test" if "test" in declarations(spec).presets else None
    overrides = {k: v for k, v in extra.items() if k in declarations(spec).hypers}
    return instantiate(spec, preset, overrides).layer


# steps per block in the harness: loop segments of 4 end mid-sequence; chunks of 16 (the smallest)
CHUNK = {"chunked": 16}


def strategies(path: Path) -> list[str]:
    """Every execution strategy that applies to the spec at its test size."""
    layer = small(path, heads=3)
    return [s.name for s, why in applicable(layer, extract_cell(layer)) if why is None]


CASES = [(p, s) for p in SPECS for s in strategies(p)]


@pytest.mark.parametrize(("path", "strategy"), CASES, ids=[f"{p.stem}-{s}" for p, s in CASES])
def test_kernel_matches_reference(path, strategy):
    """Every spec, every strategy that applies: odd sizes, a batch of 3, blocks that end mid-sequence.
    The loop runs 9 steps (checkpoint segments of 4, 4 and 1: several segments, a partial last one;
    17 steps took 1.6 to 1.8 times as long and reach no other path); the chunked form runs 17 (a full
    chunk of 16 and a partial one)."""
    T = 17 if strategy == "chunked" else 9
    compare_backends(small(path, heads=3), B=3, T=T, chunk=CHUNK.get(strategy, 4), strategy=strategy)


@pytest.mark.parametrize(("path", "strategy"), cases_params(CASES))
def test_kernel_single_step_single_head(path, strategy):
    """One token, one head, a batch of 1: blocks longer than the sequence and axes of size 1. On the
    representative specs of kernel_harness.REPRESENTATIVE by default (every state, history and decay
    kind per strategy); each spec's arithmetic is checked at 17 steps above, and every op on padded
    axes in test_ops; the whole cross product under ``-m exhaustive``."""
    compare_backends(small(path, heads=1), B=1, T=1, chunk=16, strategy=strategy)


LOOP_CASES = [(p, s) for p, s in CASES if s == "loop"]


@pytest.mark.parametrize(("path", "strategy"), cases_params(LOOP_CASES))
def test_loop_keeping_every_state_matches_reference(path, strategy):
    """A checkpoint at every step (chunk=1): the forward keeps each step's state and the values the
    backward reads back, and the backward walks the sequence once, recomputing nothing."""
    compare_backends(small(path, heads=3), B=3, T=9, chunk=1, strategy=strategy)


def test_e88_long_sequence_bf16_fp16():
    layer = instantiate(parse_file("specs/e88.rnn"), overrides={"dim": 7, "heads": 1, "n": 3}).layer
    compare_backends(layer, B=1, T=63, chunk=16)
    compare_backends(layer, B=2, T=9, dtype=torch.bfloat16, chunk=4)
    compare_backends(layer, B=2, T=9, dtype=torch.float16, chunk=4)


@pytest.mark.parametrize("name", ["e1", "e10", "e63", "lstm", "gru"])
def test_dense_strategy_matches_reference(name):
    """Wide enough that the recurrent matrix leaves the registers: the persistent dense kernels."""
    from archdsl.codegen import build_cell
    from archdsl.codegen.run.persistent import PersistentCell

    layer = instantiate(parse_file(f"specs/{name}.rnn"), overrides={"dim": 40, "expansion": 2}).layer
    assert isinstance(build_cell(layer, 4, None, 1), PersistentCell)
    compare_backends(layer, B=2, T=5, chunk=4)


def test_every_op_has_rules():
    from archdsl.codegen.emit.triton import TRITON

    from archdsl.autodiff import VJP
    from archdsl.ir import CELL_OPS
    from archdsl.reference import TORCH

    assert set(VJP) >= CELL_OPS, CELL_OPS - set(VJP)
    assert set(TRITON) >= CELL_OPS, CELL_OPS - set(TRITON)
    leaves = {
        o for o in CELL_OPS if o.value in ("input", "param", "state", "const", "sum", "rename", "expand")
    }
    assert CELL_OPS - leaves <= set(TORCH), CELL_OPS - leaves - set(TORCH)


@pytest.mark.parametrize("chunk", [4, 1], ids=["checkpoints", "every-state-kept"])
def test_torch_compile_keeps_the_layer_whole(chunk):
    """fullgraph=True fails on any graph break; the compiled layer is one custom op (its fake gives
    the shapes of what the forward keeps: checkpoints, or every step's state and kept values)."""
    from archdsl.layer import RecurrentLayer

    layer = instantiate(parse_file("specs/e88.rnn"), overrides={"dim": 8, "heads": 2, "n": 3}).layer
    m = RecurrentLayer(layer, backend="triton", seed=0, chunk=chunk, num_warps=1, tile=None)
    x = torch.randn(2, 5, 8)
    eager = m(x)[0]
    compiled = torch.compile(lambda x: m(x)[0], fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, eager)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_representative_specs_exist_and_apply():
    """A misspelt or no longer applicable entry of REPRESENTATIVE would silently drop a default case."""
    from kernel_harness import REPRESENTATIVE

    for strategy, names in REPRESENTATIVE.items():
        applies = {p.stem for p, s in CASES if s == strategy}
        assert set(names) <= applies, f"{strategy}: {sorted(set(names) - applies)} not in the cases"
