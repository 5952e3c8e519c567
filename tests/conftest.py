"""Shared test plumbing: Triton's CPU interpreter, every bundled spec as a test parameter, and a
private kernel cache per test (the ``cache`` fixture).

``TRITON_INTERPRET=1`` is set here and only here (before any test module imports triton): the
generated kernels run through Triton's CPU interpreter, on CPU tensors. The one exception is a GPU
run on a machine with CUDA: ``pytest -m gpu`` or a run of tests/test_gpu.py alone (as
benchmarks/mutation.py runs it), whose kernels run on the GPU.

A parameter marked ``exhaustive`` (the rest of a spec x strategy cross product whose representative
part runs by default, see kernel_harness.REPRESENTATIVE) is skipped unless the run asks for it:
``pytest -m exhaustive`` (only those) or ``ARCHDSL_EXHAUSTIVE=1 pytest`` (everything).

A test that takes an argument named ``spec_path`` runs once per ``specs/*.rnn`` (id: the spec's
name), so a new spec is tested without anyone writing a test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SPEC_PATHS = sorted((ROOT / "specs").glob("*.rnn"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A kernel cache of the test's own (``ARCHDSL_CACHE``, returned): a test that writes, reads or
    damages cached modules sees no other test's. Modules that need it for every test say
    ``pytestmark = pytest.mark.usefixtures("cache")``."""
    monkeypatch.setenv("ARCHDSL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def gpu_run(markexpr: str, args: list[str]) -> bool:
    """``-m gpu`` (not ``-m "not gpu"``), or only tests/test_gpu.py named, on a machine with CUDA."""
    words = markexpr.split()
    selects_gpu = "gpu" in words and "not gpu" not in " ".join(words)
    only_gpu_file = bool(args) and all(Path(a.split("::")[0]).name == "test_gpu.py" for a in args)
    return (selects_gpu or only_gpu_file) and torch.cuda.is_available()


def pytest_configure(config):
    # runs before collection, so before any test module (or the code it imports) loads triton
    if not gpu_run(config.getoption("markexpr", "") or "", list(config.args)):
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if os.environ.get("TRITON_INTERPRET") == "1":
        from interpreter_patch import install

        install()  # a helper's call inside a kernel does not re-patch triton.language


def exhaustive_run(markexpr: str) -> bool:
    words = markexpr.split()
    return os.environ.get("ARCHDSL_EXHAUSTIVE", "") not in ("", "0") or (
        "exhaustive" in words and "not exhaustive" not in " ".join(words)
    )


def pytest_collection_modifyitems(config, items):
    if exhaustive_run(config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="exhaustive cross product: run with -m exhaustive or ARCHDSL_EXHAUSTIVE=1")
    for item in items:
        if item.get_closest_marker("exhaustive"):
            item.add_marker(skip)


def pytest_generate_tests(metafunc):
    if "spec_path" in metafunc.fixturenames:
        metafunc.parametrize("spec_path", SPEC_PATHS, ids=[p.stem for p in SPEC_PATHS])
