"""The per-token kernels' launch: benchmarks/token_sweep.py on the interpreter (a row per kernel and
setting, each equal to the default setting's results) and ``TOKEN_LAUNCH`` as the one place that sets
the default (a new setting is a new module, hash and op, not a stale one)."""

import inspect
import sys
from pathlib import Path

import torch
from archdsl.codegen import plan as plan_module
from archdsl.codegen.run.chunked import build_chunked

from archdsl.api import layer_ir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import token_sweep  # noqa: E402


def test_sweep_has_a_row_per_kernel_and_setting(tmp_path):
    out = tmp_path / "sweep.md"
    text = token_sweep.main(["--preset", "test", "--out", str(out)])
    assert out.read_text() == text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    rows = [[c.strip("| ") for c in r] for r in rows[1:]]  # after the column names
    expected = {
        (spec, f"{kind} {d}", "4", "1")
        for spec in token_sweep.SPECS
        for kind in build_chunked(layer_ir(spec, "test")).kernels
        for d in ("fwd", "bwd")
    }
    assert len(expected) == 12  # gdn, mamba2, gla: coefficients and readout, forward and backward
    assert {tuple(r[:4]) for r in rows} == expected and len(rows) == len(expected)
    for r in rows:
        ms, mb, _, diff = (float(x) for x in r[4:])
        assert ms > 0 and mb > 0, r
        assert diff <= 1e-6, r  # the same results as at the default tokens and warps


def test_sweep_difference_sees_a_wrong_result():
    want = [torch.ones(3), torch.full((2,), 4.0)]
    assert token_sweep.largest_diff([w.clone() for w in want], want) == 0
    assert token_sweep.largest_diff([want[0], want[1] + 1], want) == 0.25


def test_token_launch_sets_the_default_and_the_module(monkeypatch):
    """The default plan reads TOKEN_LAUNCH; another setting reaches the generated launchers' defaults,
    so it is another source, hash and custom op."""
    spec = layer_ir("mamba2", "test")
    before = build_chunked(spec).kernels["readout"]
    assert before.plan.chunk == plan_module.TOKEN_LAUNCH["tokens"] == 16
    monkeypatch.setitem(plan_module.TOKEN_LAUNCH, "tokens", 8)
    monkeypatch.setitem(plan_module.TOKEN_LAUNCH, "warps", 2)
    after = build_chunked(spec).kernels["readout"]
    assert (after.plan.chunk, after.plan.num_warps) == (8, 2)
    assert after.hash != before.hash and after.op is not before.op
    params = inspect.signature(getattr(after.module, f"{after.stem}_readout_fwd")).parameters
    assert (params["chunk"].default, params["num_warps"].default) == (8, 2)
