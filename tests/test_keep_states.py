"""The fused loop at a checkpoint stride of 1 (``archdsl compile --chunk 1``, ``archdsl train
--keep-states``): the forward keeps every step's state and the values the backward reads back, and
the backward walks the sequence once without recomputing it. Its kernels against the reference are in
test_kernels.py (every loop spec) and test_scratch.py (disjoint memory per program); here, what a user
reaches it through."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from test_bench import bench_args

from archdsl.errors import ArchdslError
from archdsl.train import bench


def test_compile_says_the_backward_recomputes_nothing(capsys):
    from archdsl.cli import main

    assert main(["compile", "e88", "--preset", "test", "--chunk", "1", "--tile", "2", "--warps", "1"]) == 0
    assert (
        "every step's state kept by the forward (the backward recomputes nothing)" in capsys.readouterr().out
    )
    assert main(["compile", "e88", "--preset", "test", "--tile", "2", "--warps", "1"]) == 0
    assert "every 16 steps (backward recomputes each segment once)" in capsys.readouterr().out


def _grads(model, x):
    loss = model(x)[0].float().logsumexp(-1).mean()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_a_model_keeping_states_trains_as_the_default_one():
    """Two 2-layer e88 LMs from one seed, one with ``keep_states``: every layer compiles at a stride of
    1, and the loss and every parameter's gradient equal the default model's (the same arithmetic,
    read back instead of recomputed)."""
    from archdsl.lm.config import ModelConfig
    from archdsl.lm.zoo import build_model

    cfg = ModelConfig("e88", preset="test", sets={"dim": 8, "heads": 2, "n": 3}, depth=2, backend="triton")
    kept, plain = build_model(dataclasses.replace(cfg, keep_states=True)), build_model(cfg)
    assert [m.layer.compile_options.get("chunk") for m in kept.mixers] == [1, 1]
    assert all("chunk" not in m.layer.compile_options for m in plain.mixers)
    x = torch.randint(0, 256, (2, 7))
    (loss_k, grads_k), (loss_p, grads_p) = _grads(kept, x), _grads(plain, x)
    torch.testing.assert_close(loss_k, loss_p)
    for a, b in zip(grads_k, grads_p, strict=True):
        torch.testing.assert_close(a, b)


def test_keep_states_is_refused_where_it_cannot_apply():
    """A reference backend, a baseline and a spec on another strategy: refused before anything trains."""
    from archdsl.lm.config import ModelConfig
    from archdsl.lm.zoo import build_model

    with pytest.raises(ArchdslError, match="add --backend triton"):
        build_model(ModelConfig("e88", preset="test", keep_states=True))
    with pytest.raises(ArchdslError, match="'mamba2' is a baseline"):
        build_model(ModelConfig("mamba2", keep_states=True, backend="triton"))
    with pytest.raises(ArchdslError, match="'gdn' runs the chunked strategy"):
        build_model(
            ModelConfig("gdn", sets={"dim": 64, "heads": 1, "n": 64}, keep_states=True, backend="triton")
        )


def test_keep_states_is_a_models_setting_that_reaches_its_train_command():
    """``E88_d12h32:keep_states=true`` sets it for that model alone (archdsl train --keep-states); a
    model on another strategy is a row with its reason."""
    argv = ["E88_d12h32:keep_states=true", "E88_d12h32", "gdn:keep_states=true"]
    kept, plain, gdn = bench.entries(bench_args([*argv, "--minutes", "1", "--backend", "triton"]))
    assert (kept.cfg.keep_states, kept.cfg.sets, plain.cfg.keep_states) == (True, {}, False)
    assert "--keep-states" in bench.train_command(kept.cfg, bench_args(["x", "--minutes", "1"]), Path("r"))
    assert "--keep-states" not in bench.train_command(
        plain.cfg, bench_args(["x", "--minutes", "1"]), Path("r")
    )
    assert gdn.cfg is None and "'gdn' runs the chunked strategy" in gdn.error


@pytest.mark.parametrize("chunk", [1, 4])
def test_the_custom_ops_fake_shapes_are_what_the_forward_keeps(chunk):
    """torch.compile traces the loop's op by its fake, which must give the shapes the forward returns:
    each state's checkpoints at a stride above 1, its flat history and the kept values at 1."""
    from archdsl.codegen import build_cell

    from archdsl.lang.checker import instantiate
    from archdsl.lang.parser import parse_file

    layer = instantiate(parse_file("specs/e88.rnn"), overrides={"dim": 8, "heads": 2, "n": 3}).layer
    cc = build_cell(layer, chunk, None, 1).core  # the loop between the per-token kernels
    cell = cc.cell

    def shape(ax):
        return [cell.sizes[a] for a in ax]

    xs = [torch.randn(2, 5, *shape(ax)) for ax in cell.inputs.values()]
    cs = [torch.randn(*shape(ax)) for ax in cell.consts.values()]
    h0 = [torch.zeros(2, *shape(ax)) for ax in cell.states.values()]
    _, _, kept = cc.forward(xs, cs, h0)
    assert [tuple(k.shape) for k in kept] == cc.saved_shapes(2, 5)
    assert len(kept) == (2 if chunk == 1 else 1)  # S, and delta kept at a stride of 1


def test_a_run_trained_keeping_states_samples_on_the_cpu(tmp_path):
    """A run trained with ``--keep-states`` loads for sampling on the CPU, where the reference backend
    stands in for the kernels and the kernels' settings do not apply (they were refused there)."""
    from archdsl.lm.config import ModelConfig
    from archdsl.train.config import TrainConfig
    from archdsl.train.sample import load_trained
    from archdsl.train.trainer import train

    cfg = ModelConfig("e88", preset="test", sets={"dim": 8, "heads": 2, "n": 3}, depth=1, backend="triton")
    run = TrainConfig(steps=1, batch=2, seq=8, device="cpu", eval_bytes=64, out=str(tmp_path), progress=False)
    assert train(dataclasses.replace(cfg, keep_states=True), run).status == "ok"
    model = load_trained(tmp_path)
    assert model.info["backend"] == "reference" and model.info["config"]["keep_states"] is False
    assert model.generate(b"ab", 4, temperature=0)[:2] == b"ab"
