"""The fixed-budget trainer on the CPU: E88 and a baseline learn on the test corpus (tests/data); a SIGTERM
checkpoints and --resume finishes the same budget (exactly, step for step); a non-finite loss or
gradient stops the run naming the step and the tensor; bad flags are clear errors."""

import json
import lzma
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archdsl import cli
from archdsl.lm import zoo
from archdsl.lm.config import ModelConfig
from archdsl.train import checkpoint
from archdsl.train.trainer import Pruned, TrainConfig, train

CORPUS = Path(__file__).resolve().parent / "data"
VAL = str(CORPUS / "corpus-val.txt.xz")


@pytest.fixture(scope="module")
def corpus_slice(tmp_path_factory) -> str:
    """The test corpus's training text, decompressed."""
    path = tmp_path_factory.mktemp("corpus") / "train.txt"
    with lzma.open(CORPUS / "corpus-train.txt.xz") as f:
        path.write_bytes(f.read())
    return str(path)


pytestmark = pytest.mark.usefixtures("cache")  # each test its own kernel cache (conftest.py)


def small(out, **kw) -> TrainConfig:
    base = dict(
        batch=16,
        seq=64,
        lr=3e-3,
        device="cpu",
        threads=1,
        eval_bytes=8192,
        log_every=5,
        out=str(out),
        progress=False,
        warm_steps=1,
    )
    return TrainConfig(**{**base, **kw})


def check_learned(r, out: Path, first_loss_above: float = 4.5):
    assert r.status == "ok", r.message
    assert r.curve[0][2] > first_loss_above  # near ln 256 = 5.55 at the start
    assert r.last100_loss < r.curve[0][2] - 1.0, r.curve
    assert r.val_bpb < 5.0  # uniform bytes would be 8 bits
    assert r.tokens == r.steps * 16 * 64 and r.tokens_per_s > 0
    saved = json.loads((out / "result.json").read_text())
    assert saved["status"] == "ok" and saved["val_bpb"] == pytest.approx(r.val_bpb)
    env = saved["environment"]
    assert {"python", "torch", "numpy", "schedulefree"} <= set(env["versions"])
    assert env["device"] == "cpu" and "commit" in env["git"]
    events = [json.loads(line)["event"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert events[0] == "start" and {"step", "eval", "checkpoint"} <= set(events) and events[-1] == "end"
    assert (out / "checkpoint.safetensors").is_file()


@pytest.mark.slow
def test_e88_200k_learns_in_20_steps(corpus_slice, tmp_path):
    """A step budget, not a time budget: on a loaded machine 20 seconds bought as few as 4 steps."""
    mc = ModelConfig("e88", preset="demo", depth=5)
    r = train(mc, small(tmp_path, steps=20, data=[corpus_slice], val=VAL))
    check_learned(r, tmp_path)
    assert 190_000 < r.params < 210_000 and r.state_per_layer == 4 * 16 * 16
    assert r.steps == 20 and r.info["kernel_hash"] and "rnn e88" in r.info["spec_text"]


@pytest.mark.slow
def test_llama_baseline_learns_on_cpu(corpus_slice, tmp_path):
    r = train(
        ModelConfig("llama", dim=64, depth=2), small(tmp_path, minutes=10 / 60, data=[corpus_slice], val=VAL)
    )
    check_learned(r, tmp_path)
    assert r.info["model"] == "llama" and r.state_per_layer is None


def _tiny(out, **kw) -> TrainConfig:
    base = dict(batch=4, seq=16, log_every=2, data=[VAL], val_fraction=0.01, eval_bytes=512)
    return small(out, **{**base, **kw})


def test_resume_continues_exactly(tmp_path):
    """A run stopped by SIGTERM and resumed ends exactly where an uninterrupted run ends."""
    mc = ModelConfig("e88", preset="demo", depth=1)
    whole = train(mc, _tiny(tmp_path / "whole", steps=30, report_fractions=(0.4,)))

    def stop(fraction, bpb):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives during this step: checkpoint, then stop

    cut = train(mc, _tiny(tmp_path / "cut", steps=30, report_fractions=(0.4,)), on_report=stop)
    assert cut.status == "interrupted" and cut.steps == 12 and "SIGTERM" in cut.message
    done = train(mc, _tiny(tmp_path / "cut", steps=30, report_fractions=(0.4,), resume=True))
    assert done.status == "ok" and done.steps == whole.steps == 30
    assert done.reports == whole.reports and done.last100_loss == whole.last100_loss
    assert done.val_bpb == whole.val_bpb and [c[1:] for c in done.curve] == [c[1:] for c in whole.curve]


def test_resume_refuses_another_budget_or_a_missing_checkpoint(tmp_path):
    mc = ModelConfig("e88", preset="demo", depth=1)
    with pytest.raises(Exception, match="nothing to resume"):
        train(mc, _tiny(tmp_path, steps=4, resume=True))
    train(mc, _tiny(tmp_path, steps=4))
    with pytest.raises(Exception, match="steps was 4, now 8"):
        train(mc, _tiny(tmp_path, steps=8, resume=True))


def test_token_budget_and_adamw_cosine(tmp_path):
    """Tokens round up to whole steps; AdamW's lr follows the cosine over the budget down to lr / 10."""
    cfg = _tiny(tmp_path, tokens=6 * 64 - 10, optimizer="adamw", warmup=2, lr=1e-3, log_every=1)
    r = train(ModelConfig("e88", preset="demo", depth=1), cfg)
    assert r.status == "ok" and (r.steps, r.tokens) == (6, 6 * 64)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    lrs = [e["lr"] for e in lines if e["event"] == "step"]
    assert len(lrs) == 6 and lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(1e-4)
    assert r.config["optimizer"] == "adamw" and r.config["precision"] == "fp32"


def test_on_report_can_prune(tmp_path):
    seen = []

    def on_report(fraction, bpb):
        seen.append((fraction, bpb))
        if fraction >= 0.5:
            raise Pruned("behind the median")

    cfg = _tiny(tmp_path, steps=10, report_fractions=(0.5, 0.2), checkpoint=False)
    r = train(ModelConfig("e88", preset="demo", depth=1), cfg, on_report)
    assert [f for f, _ in seen] == [0.2, 0.5] and r.reports == seen
    assert r.status == "pruned" and r.steps == 5 and r.val_bpb == seen[-1][1] and 0 < r.val_bpb < 9
    assert r.message == "pruned at 50% of the budget behind the median"
    assert not (tmp_path / "checkpoint.safetensors").exists() and (tmp_path / "result.json").exists()


def test_sigterm_mid_run_then_resume_same_budget(tmp_path, capsys):
    """A real process: SIGTERM loses no step (it checkpoints), --resume ends at the same budget."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "archdsl.cli",
        "train",
        "e88",
        "--preset",
        "demo",
        "--depth",
        "1",
        "--steps",
        "150",
        "--batch",
        "4",
        "--seq",
        "8",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--data",
        VAL,
        "--eval-bytes",
        "512",
        "--log-every",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = out / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().count('"event": "step"') >= 5):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    first = json.loads((out / "result.json").read_text())
    assert first["status"] == "interrupted" and 10 <= first["steps"] < 150, first["message"]
    ckpt = checkpoint.read(out / "checkpoint.safetensors")
    assert ckpt["progress"]["step"] == first["steps"]  # nothing lost: the signal checkpointed
    again = [a for a in cmd[3:] if a != "--no-progress"] + ["--resume"]  # the same command, resumed
    assert cli.main(again) == 0  # (in this process, to save a start-up)
    final = json.loads((out / "result.json").read_text())
    assert final["status"] == "ok" and final["steps"] == 150 and final["tokens"] == 150 * 4 * 8
    events = [json.loads(line) for line in log.read_text().splitlines()]
    resume = next(e for e in events if e["event"] == "resume")
    assert resume["step"] == first["steps"]
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == sorted(steps) and steps[-1] == 150
    printed = capsys.readouterr()
    assert "e88: ok  66,312 params" in printed.out and f"result: {out / 'result.json'}" in printed.out
    assert "resuming" in printed.err


def _poisoned(where: str, after: int):
    """build_model, but from the ``after``-th call of mixers[1] on, its output or gradient is NaN."""
    real = zoo.build_model

    def build(cfg):
        m = real(cfg)
        calls = [0]
        target = m.mixers[1]

        def forward_hook(module, args, out):
            calls[0] += 1
            return out * math.nan if where == "forward" and calls[0] > after else out

        def backward_hook(module, grad_in, grad_out):
            if where == "backward" and calls[0] > after:
                return tuple(g * math.nan if g is not None else None for g in grad_in)

        target.register_forward_hook(forward_hook)
        target.register_full_backward_hook(backward_hook)
        return m

    return build


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_nonfinite_names_step_and_tensor(tmp_path, monkeypatch, where):
    monkeypatch.setattr(zoo, "build_model", _poisoned(where, after=4))
    r = train(ModelConfig("e88", preset="demo", depth=2), _tiny(tmp_path, steps=20, warm_steps=0))
    assert r.status == "nonfinite" and r.steps == 4 and r.val_bpb is None
    if where == "forward":
        assert "non-finite loss (nan) at step 5" in r.message
        assert "the output of 'mixers.1' (TakeFirst)" in r.message
    else:
        assert "non-finite gradient norm (nan) at step 5" in r.message
        assert "the gradient of parameter 'embed.weight'" in r.message  # reached through mixers.1's input
    assert json.loads((tmp_path / "result.json").read_text())["message"] == r.message


@pytest.mark.parametrize(
    "argv, message",
    [
        (["e88", "--steps", "5", "--optimizer", "sgd"], "unknown optimizer 'sgd'"),
        (["e88", "--steps", "5", "--data", "no/such/file.txt"], "no such data file: no/such/file.txt"),
        (["e88", "--steps", "5", "--device", "tpu"], "expected cpu, cuda or cuda:N, found 'tpu'"),
        (["e88", "--steps", "0"], "argument --steps: expected a positive integer, found '0'"),
        (["e88", "--steps", "5", "--params", "1M", "--dim", "64"], "give --params"),
        (["e99", "--steps", "5"], "neither a spec file"),
    ],
)
def test_bad_flags_are_clear_errors(argv, message, capsys, tmp_path):
    assert cli.main(["train", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_two_budgets_are_refused(capsys):
    assert cli.main(["train", "e88", "--steps", "5", "--minutes", "1"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_without_data_uses_the_embedded_corpus(tmp_path, capsys):
    argv = [
        "train",
        "e88",
        "--preset",
        "demo",
        "--depth",
        "1",
        "--steps",
        "3",
        "--batch",
        "2",
        "--seq",
        "16",
        "--device",
        "cpu",
        "--eval-bytes",
        "256",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "embedded demo corpus" in captured.err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["data"]["default_corpus"] and "python-stdlib" in result["data"]["train"][0]
    assert result["data"]["eval_bytes"] == 256 and f"result: {tmp_path / 'result.json'}" in captured.out


WARM_UP_FOREVER = """
import os, signal, sys
from archdsl.train import trainer as T
from archdsl.lm.config import ModelConfig

step = T.Trainer.step


def first_step_signals(self, *args):  # SIGTERM arrives during the first warm-up step
    if not getattr(self, "signalled", False):
        self.signalled = True
        os.kill(os.getpid(), signal.SIGTERM)
    return step(self, *args)


T.Trainer.step = first_step_signals
cfg = T.TrainConfig(steps=5, batch=2, seq=8, device="cpu", threads=1, eval_bytes=512, out=sys.argv[1],
                    data=[sys.argv[2]], progress=False, warm_steps=10**9)
print(T.train(ModelConfig("e88", preset="demo", depth=1), cfg).status)
"""


def test_sigterm_during_warm_up_stops_the_run(tmp_path):
    """A warm-up that would never end (10**9 steps) stops at the signal; the run ends interrupted."""
    out = subprocess.run(
        [sys.executable, "-c", WARM_UP_FOREVER, str(tmp_path / "run"), VAL],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "interrupted", out.stdout
