"""The Python API's main entry points check their numbers as the command line checks its flags: a
bad value raises one ArchdslError that names the setting, never a deeper exception."""

from __future__ import annotations

import math

import pytest
from archdsl.codegen import compile_cell
from archdsl.codegen.run.strategies import Options
from hypothesis import given, settings
from hypothesis import strategies as st

from archdsl.errors import ArchdslError
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.train.trainer import TrainConfig, resolve

BAD_FLOATS = st.sampled_from([0.0, -1.0, -1e-9, math.nan, math.inf, -math.inf])
# (field, a strategy of bad values for it)
TRAIN_FIELDS = {
    "minutes": BAD_FLOATS,
    "lr": BAD_FLOATS,
    "clip": BAD_FLOATS,
    "checkpoint_every": BAD_FLOATS,
    "val_fraction": st.sampled_from([0.0, 1.0, 2.0, -0.5, math.nan]),
    "weight_decay": st.sampled_from([-1.0, math.nan, math.inf]),
    "warmup": st.integers(max_value=-1),
    "warm_steps": st.integers(max_value=-1),
    "threads": st.integers(max_value=0),
    "batch": st.integers(max_value=0),
    "seq": st.integers(max_value=0),
    "eval_bytes": st.integers(max_value=0),
    "log_every": st.integers(max_value=0),
}


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(sorted(TRAIN_FIELDS)), data=st.data())
def test_train_config_refuses_bad_numbers(field, data):
    value = data.draw(TRAIN_FIELDS[field])
    base = {"steps": 5, "device": "cpu"} if field != "minutes" else {"device": "cpu"}
    cfg = TrainConfig(**{**base, field: value})
    with pytest.raises(ArchdslError, match=field if field != "minutes" else "budget"):
        resolve(cfg)


def test_train_config_accepts_good_numbers():
    assert resolve(TrainConfig(minutes=0.5, lr=1e-3, warmup=0, threads=1, device="cpu")).device == "cpu"


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(["chunk", "tile", "num_warps"]),
    value=st.one_of(st.integers(max_value=0), st.sampled_from([3, 6, 12, 64, 1.5])),
)
def test_compile_options_refuse_bad_numbers(name, value):
    if name == "chunk" and isinstance(value, int) and value >= 1:
        return  # any positive chunk is a checkpoint stride of the loop
    if name == "tile" and value == 64:
        return  # a power of two
    with pytest.raises(ArchdslError, match=name):
        Options(**{name: value})


def test_compile_cell_checks_its_options():
    layer = instantiate(parse_file("specs/e88.rnn"), "test").layer
    with pytest.raises(ArchdslError, match="tile must be a power of two"):
        compile_cell(layer, tile=3, num_warps=1)
    with pytest.raises(ArchdslError, match="unknown strategy"):
        compile_cell(layer, strategy="fastest")
