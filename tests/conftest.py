"""Shared test plumbing: Triton's CPU interpreter, and every bundled spec as a test parameter.

``TRITON_INTERPRET=1`` is set here and only here (before any test module imports triton): the
generated kernels run through Triton's CPU interpreter, on CPU tensors. The one exception is a GPU
run, ``pytest -m gpu`` on a machine with CUDA, which selects only the GPU tests (tests/test_gpu.py)
and runs their kernels on the GPU.

A test that takes an argument named ``spec_path`` runs once per ``specs/*.rnn`` (id: the spec's
name), so a new spec is tested without anyone writing a test.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SPEC_PATHS = sorted((ROOT / "specs").glob("*.rnn"))


def gpu_run(markexpr: str) -> bool:
    """``-m gpu`` (not ``-m "not gpu"``) on a machine with CUDA."""
    selects_gpu = "gpu" in markexpr.split() and "not gpu" not in " ".join(markexpr.split())
    return selects_gpu and torch.cuda.is_available()


def pytest_configure(config):
    # runs before collection, so before any test module (or the code it imports) loads triton
    if not gpu_run(config.getoption("markexpr", "") or ""):
        os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_generate_tests(metafunc):
    if "spec_path" in metafunc.fixturenames:
        metafunc.parametrize("spec_path", SPEC_PATHS, ids=[p.stem for p in SPEC_PATHS])
