"""Shared test plumbing: every bundled spec as a test parameter.

A test that takes an argument named ``spec_path`` runs once per ``specs/*.rnn`` (id: the spec's
name), so a new spec is tested without anyone writing a test.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# Generated kernels run through Triton's CPU interpreter where there is no GPU (set before any test
# module imports triton); on a CUDA machine they run on the GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parent.parent
SPEC_PATHS = sorted((ROOT / "specs").glob("*.rnn"))


def pytest_generate_tests(metafunc):
    if "spec_path" in metafunc.fixturenames:
        metafunc.parametrize("spec_path", SPEC_PATHS, ids=[p.stem for p in SPEC_PATHS])
