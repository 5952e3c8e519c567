"""benchmarks/bench_lanes.py: a lane's own step modes (``--modes-for``) replace the shared ``--modes``."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_lanes  # noqa: E402


def test_modes_for_replaces_the_shared_modes():
    flags = ["--params", "100M", "--modes", "eager,cudagraphs", "--minutes", "0.5"]
    assert bench_lanes.lane_flags(flags, "eager") == [
        "--params",
        "100M",
        "--minutes",
        "0.5",
        "--modes",
        "eager",
    ]
    assert bench_lanes.lane_flags(["--modes=compile", "--seed", "1"], "cudagraphs") == [
        "--seed",
        "1",
        "--modes",
        "cudagraphs",
    ]
    assert bench_lanes.lane_flags(flags, None) == flags


def test_modes_for_names_a_lane():
    assert bench_lanes.parse_modes_for(["fla-gdn=eager"], ["E88", "fla-gdn"]) == {"fla-gdn": "eager"}
    for bad in ("mamba2=eager", "fla-gdn", "fla-gdn="):
        with pytest.raises(SystemExit, match="--modes-for: expected MODEL=MODES"):
            bench_lanes.parse_modes_for([bad], ["E88", "fla-gdn"])
