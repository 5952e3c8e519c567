"""``archdsl train --compile``: the compiled step computes what the eager step does, a spec LM traces
as one graph (its cells are custom ops with fake implementations), and the compile switches refuse
what cannot run. On the CPU the cells run through the Triton interpreter and the graph is compiled
by ``aot_eager`` (traced and differentiated as inductor sees it, without generating code, which
takes a minute per model on a CPU). The training test uses minGRU, whose kernels the interpreter
runs five times faster than E88's; the graph test uses E88, the model the GPU benchmarks compile."""

import json
from pathlib import Path

import pytest
import torch

from archdsl import cli
from archdsl.train.config import TrainConfig, resolve, step_settings

VAL = str(Path(__file__).resolve().parent / "data" / "corpus-val.txt.xz")
TINY = ["mingru", "--dim", "8", "--depth", "1", "--backend", "triton"]  # quick in the interpreter
RUN = [
    *("--steps", "3", "--batch", "2", "--seq", "8", "--data", VAL, "--device", "cpu", "--threads", "1"),
    *("--eval-bytes", "16", "--log-every", "1", "--checkpoint-every", "0", "--no-progress"),
]


pytestmark = pytest.mark.usefixtures("cache")  # each test its own kernel cache (conftest.py)


def step_losses(out: Path) -> list[float]:
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [e["loss"] for e in lines if e["event"] == "step"]


def test_compiled_training_gives_the_eager_losses(tmp_path, capsys):
    """Same seed, same batches: every step's loss and the held-out bpb agree to float rounding."""
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    assert cli.main(["train", *TINY, *RUN, "--out", str(eager)]) == 0
    argv = [
        "train",
        *TINY,
        *RUN,
        "--out",
        str(compiled),
        "--compile",
        "--config",
        "compile_backend=aot_eager",
    ]
    from torch._dynamo.utils import counters

    counters.clear()
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert not counters["graph_break"], dict(counters["graph_break"])  # the cells built before tracing
    a, b = step_losses(eager), step_losses(compiled)
    assert len(a) == len(b) == 3 and a[0] > 4.0
    assert b == pytest.approx(a, rel=1e-5, abs=1e-6)
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (eager, compiled))
    assert rb["val_bpb"] == pytest.approx(ra["val_bpb"], rel=1e-5)
    assert (ra["config"]["compile"], rb["config"]["compile"]) == (False, True)
    assert rb["config"]["compile_backend"] == "aot_eager" and rb["config"]["compile_mode"] == "default"


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_a_spec_lm_is_one_graph_forward_and_backward(backend):
    """No graph break anywhere in the LM: ``explain`` counts none and ``fullgraph=True`` (which fails
    on a break) trains to the eager gradients; the compiled cells stay whole as ``archdsl::`` ops.
    The reference backend's loop over time is unrolled into the graph (so T is kept at 3)."""
    from archdsl.lm.config import ModelConfig
    from archdsl.lm.zoo import build_model

    torch.manual_seed(0)
    cfg = ModelConfig("e88", dim=8, depth=1, backend=backend, sets={"heads": 2, "n": 4})
    model = build_model(cfg)
    x = torch.randint(0, 256, (2, 3))
    model(x).square().mean().backward()  # eager: builds the cells (and would tune them on a GPU)
    eager = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    if backend == "triton":
        explained = torch._dynamo.explain(model)(x)
        assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
        nodes = [n for g in explained.graphs for n in g.graph.nodes if n.op == "call_function"]
        assert any(str(n.target).startswith("archdsl.") for n in nodes), [n.target for n in nodes]
        torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    compiled(x).square().mean().backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, eager[k], rtol=1e-5, atol=1e-7, msg=k)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--compile", "--compile-mode", "fastest"], "argument --compile-mode: invalid choice: 'fastest'"),
        (
            ["--compile", "--compile-mode", "reduce-overhead"],
            "compile_mode reduce-overhead replays CUDA graphs, which need a CUDA device, found device cpu",
        ),
        (["--compile-mode", "max-autotune-no-cudagraphs"], "is given without compile (add --compile)"),
        (["--compile", "--config", "compile_backend=tvm"], "unknown compile_backend 'tvm'"),
    ],
)
def test_compile_switches_refuse_in_one_line(flags, message, tmp_path, capsys):
    assert cli.main(["train", *TINY, *RUN, "--out", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err
    assert not (tmp_path / "log.jsonl").exists()


def test_step_settings_name_each_combination():
    assert step_settings(False, "reduce-overhead") == "eager"
    assert step_settings(True) == "compile"
    assert step_settings(True, "reduce-overhead") == "compile+cudagraphs"
    assert step_settings(True, "max-autotune-no-cudagraphs") == "compile+autotune"
    assert step_settings(True, "max-autotune") == "compile+autotune+cudagraphs"
    assert step_settings(True, backend="aot_eager") == "compile(aot_eager)"
    cfg = resolve(TrainConfig(steps=1, device="cpu", compile=True, compile_mode="max-autotune-no-cudagraphs"))
    assert cfg.compile_mode == "max-autotune-no-cudagraphs"


def test_the_reproduce_command_keeps_the_compile_switches():
    import argparse

    from archdsl.lm.config import ModelConfig
    from archdsl.train import cli as train_cli

    cfg = TrainConfig(steps=2, device="cpu", compile=True, compile_mode="max-autotune-no-cudagraphs")
    argv = train_cli.command(ModelConfig("e88"), cfg)
    assert argv[argv.index("--compile-mode") + 1] == "max-autotune-no-cudagraphs" and "--compile" in argv
    p = argparse.ArgumentParser()
    train_cli.add_arguments(p)
    _, back = train_cli.configs(p.parse_args(argv[2:]))
    assert (back.compile, back.compile_mode, back.compile_backend) == (True, cfg.compile_mode, "inductor")


@pytest.mark.parametrize("graphs, expected", [(False, [True, False]), (True, [True, False, False, False])])
def test_the_warm_up_runs_one_eager_step_then_compiled_ones(graphs, expected, tmp_path, monkeypatch):
    """warm_steps=1 still compiles off the clock: one eager step (builds the cells), then compiled
    steps (three with CUDA graphs: warm, record, replay); the model is compiled afterwards."""
    from archdsl.lm.config import ModelConfig
    from archdsl.train.trainer import Trainer

    cfg = TrainConfig(
        steps=1, batch=2, seq=8, device="cpu", data=[VAL], eval_bytes=16, out=str(tmp_path), progress=False
    )
    cfg.warm_steps, cfg.compile, cfg.compile_backend = 1, True, "aot_eager"
    trainer = Trainer(ModelConfig("nn-gru", dim=8, depth=1), cfg)
    try:
        trainer.graphs = graphs  # CUDA graphs cannot be asked for on the CPU; the count is the point
        eager = []
        monkeypatch.setattr(
            Trainer, "step", lambda self, opt, *batch, **kw: eager.append(self.forward is self.model)
        )
        trainer.warm_up()
        assert eager == expected and trainer.forward is not trainer.model
    finally:
        trainer.log.close()
        trainer.dir.close()


def test_a_resume_may_change_how_the_step_runs():
    """Compiling is not a setting of the run: a checkpoint taken eagerly (or before compile_mode
    existed) resumes compiled, and the other way round."""
    from dataclasses import asdict

    from archdsl.train import checkpoint

    old = asdict(TrainConfig(steps=4))
    del old["compile_mode"], old["compile_backend"]
    now = asdict(TrainConfig(steps=4, compile=True, compile_mode="max-autotune-no-cudagraphs"))
    assert checkpoint._differences(old, now, checkpoint.FREE_ON_RESUME) == []
    assert checkpoint._differences(old, asdict(TrainConfig(steps=8)), checkpoint.FREE_ON_RESUME) == [
        "steps was 4, now 8"
    ]
