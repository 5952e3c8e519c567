"""Kernels against the reference on a CUDA GPU: what Triton's CPU interpreter cannot show.

The interpreter runs a launch's programs one after another, so programs that share scratch memory,
a grid barrier that releases one step early, or a persistent grid that is not co-resident all give
the right numbers there. On a GPU the programs run at once. Run ``pytest -m gpu tests/test_gpu.py``
on a machine with CUDA: tests/conftest.py sets ``TRITON_INTERPRET=1`` for every other run (these
tests then skip rather than run on the interpreter). Each test is skipped on a machine without CUDA.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from op_oracles import default_params, kernel_vs_reference, random_inputs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (run pytest -m gpu tests/test_gpu.py there)"
    ),
    pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
        reason="TRITON_INTERPRET is set (name -m gpu or this file alone): kernels would run interpreted",
    ),
]

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted(ROOT.glob("specs/*.rnn"))


def _layer(path, **overrides):
    from archdsl.lang.checker import declarations, instantiate
    from archdsl.lang.parser import parse_file

    spec = parse_file(path)
    decl = declarations(spec)
    preset = "test" if "test" in decl.presets else None
    return instantiate(spec, preset, {k: v for k, v in overrides.items() if k in decl.hypers}).layer


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_spec_on_the_gpu(path):
    """B 3, T 37, checkpoints every 8 steps (5 segments, the last partial), 3 heads."""
    from kernel_harness import compare_backends

    compare_backends(_layer(path, heads=3), B=3, T=37, chunk=8, device="cuda")


LOOP_SPECS = [p for p in SPECS if p.stem in ("e88", "e10", "mlstm", "gdn", "mamba", "lstm")]


@pytest.mark.parametrize("path", LOOP_SPECS, ids=lambda p: p.stem)
def test_loop_keeping_every_state_on_the_gpu(path):
    """The loop with a checkpoint at every step: the forward writes each step's state and stashed
    values, and the backward's one reverse walk reads them back (B 3, T 37, 3 heads)."""
    from kernel_harness import compare_backends

    compare_backends(_layer(path, heads=3), B=3, T=37, chunk=1, strategy="loop", device="cuda")


def test_fused_loop_many_programs_deterministic():
    """E88 with the value axis in tiles of 4: 3 x 4 x 4 programs per launch sharing the backward
    scratch buffers (one region each); two runs must agree bit for bit (a race would differ)."""
    from archdsl.codegen import build_cell

    from archdsl.lang.checker import instantiate
    from archdsl.lang.parser import parse_file

    layer = instantiate(
        parse_file(ROOT / "specs" / "e88.rnn"), overrides={"dim": 32, "heads": 4, "n": 8, "expansion": 2}
    ).layer
    cc = build_cell(layer, 8, 4, 2)
    assert cc.plan.n_tiles == 16 and cc.plan.chunk == 8
    inputs, params = random_inputs(layer, 3, 37), default_params(layer)
    first = kernel_vs_reference(layer, inputs, params, cell=cc, device="cuda", tol=1e-4)
    again = kernel_vs_reference(layer, inputs, params, cell=cc, device="cuda", tol=1e-4)
    assert first == again


@pytest.mark.parametrize("batch", [2, 130], ids=["one-batch-block", "two-batch-blocks"])
def test_persistent_dense_at_several_row_blocks(batch):
    """E1 at d 80: 5 row blocks of 16 (10 programs at B 130, in two batch blocks) in one persistent
    launch per direction, synchronised by the grid barrier at every step."""
    from archdsl.codegen import build_cell
    from archdsl.codegen.run.persistent import PersistentCell

    from archdsl.lang.checker import instantiate
    from archdsl.lang.parser import parse_file

    layer = instantiate(parse_file(ROOT / "specs" / "e1.rnn"), overrides={"dim": 40, "expansion": 2}).layer
    cc = build_cell(layer, 16, 16, 4)
    assert isinstance(cc, PersistentCell) and cc.plan.rows == 16 and cc.plan.tiles == 5
    assert cc.plan.programs(batch) == (5 if batch <= 128 else 10)
    kernel_vs_reference(
        layer, random_inputs(layer, batch, 33), default_params(layer), cell=cc, device="cuda", tol=1e-4
    )
    assert len(cc.last_sync) == 2, "not launched persistently (one launch per direction)"
    assert all(int(s[0].item()) > 0 for s in cc.last_sync)  # the barrier counted arrivals
    cc.check_barriers()


def test_hoisted_and_readout_kernels_on_the_gpu():
    """GDN: a per-token part before the loop and a normalising readout after it, B 2, T 40."""
    from archdsl.codegen import build_cell
    from archdsl.codegen.run.runtime import HoistedCell

    layer = _layer(Path(__file__).resolve().parents[1] / "specs" / "gdn.rnn", heads=3)
    cc = build_cell(layer, 8, 2, 1)
    assert isinstance(cc, HoistedCell) and cc.readout is not None
    kernel_vs_reference(
        layer, random_inputs(layer, 2, 40), default_params(layer), cell=cc, device="cuda", tol=1e-4
    )


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_first_call_under_inference_tunes_and_decodes(mode, tmp_path, monkeypatch):
    """A tunable layer's first CUDA call from decoding (no autograd) still times its launch plans
    with forward+backward, and its steps equal the full forward."""
    from archdsl.layer import RecurrentLayer

    monkeypatch.setenv("ARCHDSL_CACHE", str(tmp_path))  # a cold autotune cache: tuning runs
    layer = _layer(ROOT / "specs" / "e88.rnn")
    m = RecurrentLayer(layer, backend="triton", seed=0).cuda().eval()
    x = torch.randn(2, 5, layer.dim, device="cuda")
    guard = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with guard:
        state, ys = None, []
        for t in range(x.shape[1]):
            y_t, state = m.step(x[:, t], state)
            ys.append(y_t)
        y, _ = m(x)
    rel = (torch.stack(ys, 1) - y).norm() / y.norm()
    assert rel < 1e-5


def test_tuning_times_the_plans_replayed_as_cuda_graphs(tmp_path, monkeypatch):
    """The tuner times each candidate plan replayed as a CUDA graph (GPU time, not the host's launch
    overhead); a layer that a graph cannot capture would be timed by the wall clock, with a line
    saying so. E88 at a checkpoint stride of 1, a cold autotune cache."""
    from archdsl.codegen.run import tune

    from archdsl.layer import RecurrentLayer

    said = []
    monkeypatch.setattr(tune, "progress", said.append)
    monkeypatch.setenv("ARCHDSL_CACHE", str(tmp_path))
    layer = _layer(ROOT / "specs" / "e88.rnn", heads=4)
    m = RecurrentLayer(layer, backend="triton", seed=0, chunk=1).cuda()
    x = torch.randn(4, 64, layer.dim, device="cuda", requires_grad=True)
    m(x)[0].sum().backward()
    assert any(s.startswith("tuned e88") for s in said), said
    assert not any("wall time" in s for s in said), said


@pytest.mark.parametrize(
    ("model", "sets"),
    [
        ("e88", {"heads": 2, "n": 16}),  # the fused loop
        ("gdn", {"heads": 2, "n": 64}),  # the chunked kernels, short convolutions (a history)
        ("lstm", {}),  # the persistent kernels
    ],
    ids=["loop", "chunked", "persistent"],
)
def test_generate_replays_cuda_graphs_with_the_eager_bytes(model, sets, monkeypatch):
    """``generate`` on a GPU replays one captured step per byte (or, where a capture fails, warns
    and steps eagerly) and gives the eager steps' bytes, greedy and sampled, in fp32 and under bf16
    autocast."""
    import warnings

    from archdsl.lm import generate as decoding
    from archdsl.lm.config import ModelConfig
    from archdsl.lm.zoo import build_model

    torch.manual_seed(0)
    lm = build_model(ModelConfig(model, dim=64, depth=2, backend="triton", sets=sets)).cuda()
    prompt = torch.randint(0, 256, (2, 5))
    replays = []
    real = decoding.GraphedStep.__call__

    def counted(self, token):
        replays.append(1)
        return real(self, token)

    monkeypatch.setattr(decoding.GraphedStep, "__call__", counted)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graphed = lm.generate(prompt, 24, temperature=0, graphs=True)
        sampled = lm.generate(prompt, 24, temperature=0.8, seed=3, graphs=True)
        with torch.autocast("cuda", torch.bfloat16):  # a caller's autocast, its cast cache on
            halved = lm.generate(prompt, 24, temperature=0, graphs=True)
    monkeypatch.undo()
    with torch.autocast("cuda", torch.bfloat16):
        assert torch.equal(halved, lm.generate(prompt, 24, temperature=0, graphs=False))
    assert torch.equal(graphed, lm.generate(prompt, 24, temperature=0, graphs=False))
    assert torch.equal(sampled, lm.generate(prompt, 24, temperature=0.8, seed=3, graphs=False))
    fell_back = [str(w.message) for w in caught if "without CUDA graphs" in str(w.message)]
    assert replays or fell_back, "neither a replay nor a fallback"
    if model != "lstm":
        assert not fell_back and len(replays) == 3 * (23 - 1), fell_back
