"""``archdsl search --products``: the chunked kernels' setting (``archdsl train --products``) of every
trial whose layer runs the chunked strategy; refused before any trial where no trial could take it."""

from __future__ import annotations

import argparse

import pytest

pytest.importorskip("optuna")

from archdsl.search import cli  # noqa: E402
from archdsl.search.repro import model_config, train_command, train_config  # noqa: E402
from archdsl.search.space import Candidate  # noqa: E402

from archdsl.errors import ArchdslError  # noqa: E402


def settings(*argv: str):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.new_settings(parser.parse_args(["--budget", "1M", *argv]))


def command(cand: Candidate, s, tmp_path) -> str:
    return train_command(model_config(cand, s, 0), train_config(cand, s, tmp_path, 0))


def test_the_setting_reaches_every_chunked_trial_and_its_command(tmp_path):
    s = settings("gdn", "--backend", "triton", "--products", "half", "--n", "16,128")
    assert s.products == "half" and "products" in cli.DEFINING  # a resumed study cannot change it
    cand = Candidate("gdn", {"heads": 2, "n": 128}, depth=2, lr=1e-3, dim=64)
    assert model_config(cand, s, 0).products == "half"
    assert " --products half " in command(cand, s, tmp_path)
    assert model_config(cand, settings("gdn", "--backend", "triton"), 0).products is None  # tf32


def test_a_trial_off_the_chunked_strategy_trains_without_it(tmp_path):
    """gdn at a key axis of 16 runs the loop (chunked only from 64: the loop measured faster), llama
    is a baseline: both train as without the flag, and their commands say so."""
    s = settings("gdn", "llama", "--backend", "triton", "--products", "half")
    for cand in (
        Candidate("gdn", {"heads": 2, "n": 16}, depth=2, lr=1e-3),
        Candidate("llama", {}, depth=2, lr=1e-3),
    ):
        assert model_config(cand, s, 0).products is None
        assert "--products" not in command(cand, s, tmp_path)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["gdn", "--products", "half"],
            "--products half: the compiled kernels' setting; add --backend triton",
        ),
        (
            ["llama", "--backend", "triton", "--products", "half"],
            "--products half: a spec's setting; this search has only baselines",
        ),
    ],
    ids=["reference-backend", "baselines-only"],
)
def test_a_search_where_no_trial_could_take_it_is_refused_before_any_trial(argv, message):
    with pytest.raises(ArchdslError) as e:
        settings(*argv)
    assert e.value.message == message


def test_keep_states_reaches_every_loop_trial_and_no_other(tmp_path):
    """``archdsl search --keep-states``: a trial on the fused loop (e88) trains with it and its command
    says so; one on the chunked strategy (gdn at a key axis of 128) or a baseline trains without it."""
    s = settings("e88", "gdn", "llama", "--backend", "triton", "--keep-states")
    assert s.keep_states and "keep_states" in cli.DEFINING
    e88 = Candidate("e88", {"heads": 2, "n": 16}, depth=2, lr=1e-3, dim=64)
    assert model_config(e88, s, 0).keep_states and " --keep-states " in command(e88, s, tmp_path) + " "
    for cand in (
        Candidate("gdn", {"heads": 2, "n": 128}, depth=2, lr=1e-3, dim=64),
        Candidate("llama", {}, depth=2, lr=1e-3),
    ):
        assert not model_config(cand, s, 0).keep_states
        assert "--keep-states" not in command(cand, s, tmp_path)
    assert not settings("e88", "--backend", "triton").keep_states


@pytest.mark.parametrize(
    "argv, message",
    [
        (["e88", "--keep-states"], "--keep-states: the compiled kernels' setting; add --backend triton"),
        (["llama", "--backend", "triton", "--keep-states"], "--keep-states: a spec's setting; this search"),
    ],
)
def test_keep_states_is_refused_where_no_trial_could_take_it(argv, message):
    with pytest.raises(ArchdslError, match=message):
        settings(*argv)
