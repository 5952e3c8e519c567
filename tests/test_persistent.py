"""The persistent dense strategy (codegen/run/persistent.py): chosen where it applies, the fallback where
it does not, and the kernels against the reference (CPU interpreter: one step per launch, or the
whole sequence in one launch when the grid is a single program)."""

import pytest
import torch
from kernel_harness import TOLERANCE, assert_close, compare_backends

from archdsl.autodiff import extract_cell
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse, parse_file
from archdsl.layer import RecurrentLayer
from archdsl.reference import reference_cell


def e1(dim: int, expansion: int = 1):
    return instantiate(parse_file("specs/e1.rnn"), overrides={"dim": dim, "expansion": expansion}).layer


def test_chosen_for_e1_once_the_matrix_leaves_the_registers():
    from archdsl.codegen import build_cell
    from archdsl.codegen.run.persistent import PersistentCell

    assert not isinstance(build_cell(e1(64), 4, None, None), PersistentCell)  # 64 x 64: registers
    cc = build_cell(e1(1312), 16, None, None)
    assert isinstance(cc, PersistentCell)
    info = cc.plan.describe(cc.cell.states)
    assert info["strategy"] == "persistent dense recurrence"
    assert (info["programs"], info["rows_per_program"]) == (82, 16)  # 1312 rows in tiles of 16
    assert cc.plan.blocks(48) == (64, 128, 82)  # batch rows, k block, programs
    assert cc.plan.blocks(65) == (128, 64, 82) and cc.plan.programs(129) == 164  # batch blocks of 128
    assert build_cell(e1(4096), 16, None, None).plan.rows == 32  # at most 128 programs per batch block
    # compile_cell's autotuner measures (tile, warps) candidates only for tunable strategies: they
    # would replace this strategy's measured defaults (and its plan has no ``n_tiles``)
    from archdsl.codegen.run.strategies import by_name

    assert cc.strategy == "persistent" and not by_name("persistent").tunable
    assert cc.kernels.fwd_kernel is not None
    source = cc.path.read_text()
    assert "tl.dot(" in source and "_grid_wait(p_sync" in source and 'sem="release"' in source


@pytest.mark.parametrize("name", ["e1", "e10", "e63", "lstm", "gru"])
def test_applies_to_every_bundled_dense_cell(name):
    from archdsl.codegen.plan import make_plan
    from archdsl.codegen.run.dense import find_matvecs, step_cell
    from archdsl.codegen.run.persistent import dense_layout

    layer = instantiate(parse_file(f"specs/{name}.rnn"), overrides={"dim": 40, "expansion": 2}).layer
    cell = extract_cell(layer)
    matvecs = find_matvecs(cell, make_plan(cell).block)
    lay = dense_layout(cell, matvecs, step_cell(cell, matvecs))
    assert lay is not None and lay.rows == "i" and set(lay.contracted) == {"j"}
    assert set(lay.operand) == {"h"} and len(lay.operand) == {"lstm": 4, "gru": 3}.get(name, 1)


FALLBACK = """
rnn squashed
hyper dim = 40
let d = 80
axis i = d
axis j = d
project x -> wx[i]
param W_h[i, j] = xavier()
state h[i]
g = tanh(h)
h' = tanh(wx + sum[j](W_h * g[j]))
y = h'
output y
"""


def test_operand_not_a_state_falls_back_to_the_per_step_gemm():
    """The contraction reads tanh(h), not h: the persistent layout does not apply."""
    from archdsl.codegen import build_cell
    from archdsl.codegen.run.dense import DenseCell

    layer = instantiate(parse(FALLBACK, "squashed.rnn")).layer
    assert isinstance(build_cell(layer, 4, None, 1), DenseCell)
    compare_backends(layer, B=2, T=3, chunk=4)


def test_e1_fp32_odd_width_and_batch():
    """d = 67 (rows 64..66 masked in the last tile), batch 3, 6 steps: fp32 within 1e-5."""
    errors = compare_backends(e1(67), B=3, T=6, chunk=4)
    assert max(errors.values()) <= TOLERANCE[torch.float32]


def test_e1_bf16_and_single_step():
    compare_backends(e1(40, 2), B=2, T=4, dtype=torch.bfloat16, chunk=4)
    compare_backends(e1(40, 2), B=1, T=1, chunk=4)


def test_whole_sequence_in_one_launch():
    """A grid of one program runs the persistent loop itself (barrier and all) in the interpreter:
    the same results as the reference, including the gradient of the matrix."""
    from archdsl.codegen import build_cell

    layer = e1(40, 2)  # d = 80: one program of 128 rows
    cc = build_cell(layer, 4, 128, 2)
    assert cc.plan.programs(3) == 1
    m = RecurrentLayer(layer, seed=0)
    front = {k: v.detach().requires_grad_(True) for k, v in m.frontier_values().items()}
    torch.manual_seed(1)
    assert cc.input_names == ["wx", "z"]  # the per-token tensors the step reads
    ins = {n: torch.randn(3, 7, 80, requires_grad=True) for n in cc.input_names}
    h0 = {"h": 0.5 * torch.randn(3, 80, requires_grad=True)}
    y1, f1 = reference_cell(layer, ins, front, h0)
    y2, f2 = cc(ins, front, h0)
    assert_close("y", y2, y1, 1e-5)
    assert_close("final h", f2["h"], f1["h"], 1e-5)
    w = torch.randn_like(y1)
    wrt = [*ins.values(), *front.values(), h0["h"]]
    g1 = torch.autograd.grad((y1 * w).sum() + f1["h"].square().sum(), wrt)
    g2 = torch.autograd.grad((y2 * w).sum() + f2["h"].square().sum(), wrt)
    for name, a, b in zip(["dwx", "dz", "dW_h", "dh0"], g2, g1):
        assert_close(name, a, b, 1e-5)
    assert len(cc.last_sync) == 2  # one persistent launch each way, not one launch per step
    cc.check_barriers()


def test_torch_compile_fullgraph():
    layer = e1(40, 2)
    m = RecurrentLayer(layer, backend="triton", seed=0, chunk=4, num_warps=1, tile=None)
    m.eval()  # the spectral norm's power iteration would otherwise move between the two calls
    x = torch.randn(2, 3, 40)
    eager = m(x)[0]
    out = torch.compile(lambda x: m(x)[0], fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(out, eager)
    out.sum().backward()
    assert m.params["W_h"].grad is not None and m.params["W_h"].grad.abs().sum() > 0


def test_compile_reports_the_strategy(capsys, tmp_path):
    from archdsl.cli import main

    assert main(["compile", "e1", "--set", "dim=1312", "--set", "expansion=1", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "persistent dense recurrence" in out
    assert "82 programs per batch block, each 16 rows of axis i" in out
    (written,) = tmp_path.glob("e1_*.py")
    assert "def e1_persistent_fwd_kernel(" in written.read_text()
