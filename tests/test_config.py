"""One configuration encoding: ``key=value`` items over the config dataclasses (archdsl/config.py),
read back exactly by ``apply_overrides`` from what ``to_argv`` writes, and the ``archdsl train``
command line that the bench and the search print, read back by the trainer's own flags."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import subprocess
import sys

import pytest

from archdsl.cli import main
from archdsl.config import apply_overrides, to_argv
from archdsl.errors import ArchdslError
from archdsl.lm.config import ModelConfig
from archdsl.train import cli
from archdsl.train.config import TrainConfig

MODELS = [
    ModelConfig(),
    ModelConfig("llama", dim=64, depth=2, sets={"head_dim": 16}, seed=3),
    ModelConfig("e88", preset="E88_b56n32"),  # depth 32 from the preset
    ModelConfig("e88", preset="E88_b56n32", depth=20),  # the preset's depth overridden
    ModelConfig("e88", params=250_000, align=128, tolerance=0.05, backend="triton"),
    ModelConfig("gdn", preset="GDN_100m", backend="triton", products="half"),
    # entries that look like numbers or like none stay what they were
    ModelConfig("specs/e88.rnn", sets={"heads": 8, "n": "16", "gate": "none", "decay": 0.5, "q": '"x"'}),
]
TRAINS = [
    TrainConfig(),
    TrainConfig(steps=10, lr=1e-3, betas=(0.8, 0.99), clip=0.5, optimizer="adamw", warmup=5),
    TrainConfig(minutes=2.5, data=["a.txt", "b,c.txt", "[d].txt"], val="none", out="runs/x y"),
    TrainConfig(tokens=50_000_000, checkpoint_every=None, checkpoint=False, progress=False, threads=1),
    TrainConfig(
        steps=2, report_fractions=(0.25, 1.0), log_to=["csv"], eval_every=7, compile=True, force=True
    ),
]


@pytest.mark.parametrize("cfg", MODELS + TRAINS, ids=repr)
def test_to_argv_and_apply_overrides_are_inverses(cfg):
    items = to_argv(cfg)
    assert apply_overrides(type(cfg)(), items) == cfg
    assert all(isinstance(i, str) and "=" in i for i in items)


def test_defaults_write_nothing():
    assert to_argv(TrainConfig()) == [] and to_argv(ModelConfig()) == []


def test_values_are_read_as_their_field_types():
    cfg = apply_overrides(
        TrainConfig(),
        ["tokens=50M", "eval-bytes=4K", "lr=1e-3", "compile=yes", "val=none", "betas=0.9,0.99", "data=a,b"],
    )
    assert (cfg.tokens, cfg.eval_bytes, cfg.lr, cfg.compile) == (50_000_000, 4000, 1e-3, True)
    assert (cfg.val, cfg.betas, cfg.data) == (None, (0.9, 0.99), ["a", "b"])
    model = apply_overrides(ModelConfig(), ["sets.heads=8", "sets.gate=silu", "sets.heads=16"])
    assert model.sets == {"heads": 16, "gate": "silu"}  # later items win


def test_a_type_starts_from_its_defaults_and_an_instance_from_its_values():
    assert apply_overrides(ModelConfig, ["preset=E88_b56n32"]).depth == 32  # __post_init__ sees the preset
    assert apply_overrides(ModelConfig(depth=4), ["preset=E88_b56n32"]).depth == 4


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("batch=abc", "--config batch=abc: batch expects an integer (100, 250K, 1M), found 'abc'"),
        ("steps=1.5", "--config steps=1.5: steps expects an integer (100, 250K, 1M) or none, found '1.5'"),
        ("lr=fast", "--config lr=fast: lr expects a number, found 'fast'"),
        ("compile=maybe", "--config compile=maybe: compile expects true or false, found 'maybe'"),
        ("betas=0.9", "--config betas=0.9: betas expects 2 comma-separated numbers, found '0.9'"),
        ("clpi=0.5", "--config clpi=0.5: unknown key 'clpi'; did you mean 'clip'?"),
        ("lr.x=1", "--config lr.x=1: 'lr' has no entries (lr expects a number)"),
        ("lr", "--config expects KEY=VALUE, found 'lr'"),
    ],
)
def test_bad_items_are_one_line_errors(item, message):
    with pytest.raises(ArchdslError) as e:
        apply_overrides(TrainConfig(), [item])
    assert e.value.message == message


# ---- the trainer's command line ------------------------------------------------------------------
def parse(argv: list[str]):
    assert argv[:2] == ["archdsl", "train"]
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return cli.configs(p.parse_args(argv[2:]))


@pytest.mark.parametrize("model", MODELS[1:], ids=repr)
@pytest.mark.parametrize("train", [dataclasses.replace(t, out="runs/r") for t in TRAINS[1:]], ids=repr)
def test_a_train_command_reruns_its_configs(model, train):
    train = dataclasses.replace(train, seed=model.seed)  # --seed sets both
    model_cfg, cfg = parse(cli.command(model, train, leave_out=()))
    assert model_cfg == (model if model.dim is None else dataclasses.replace(model, params=None))
    assert cfg == train


def test_flags_and_config_items_are_one_encoding():
    a = parse(shlex.split("archdsl train e88 --steps 3 --eval-bytes 4K --heads 2 --set gate=silu --seed 5"))
    b = parse(
        shlex.split("archdsl train e88 --steps 3 --config eval_bytes=4K --config sets.heads=2 ")
        + ["--config", "sets.gate=silu", "--config", "seed=5"]
    )
    assert a == b and a[0].sets == {"gate": "silu", "heads": 2} and a[0].seed == a[1].seed == 5


def test_a_bad_config_item_is_an_error_line(capsys):
    assert main(["train", "e88", "--steps", "1", "--config", "clpi=0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --config clpi=0.5: unknown key 'clpi'; did you mean 'clip'?\n")
    assert "Traceback" not in err


def test_configs_and_commands_do_not_import_torch():
    """A search worker writes trial jobs and reproduce commands without loading torch."""
    code = (
        "import sys, archdsl.config, archdsl.lm.config, archdsl.train.config, archdsl.train.cli; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
