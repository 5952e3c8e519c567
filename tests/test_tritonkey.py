"""Triton's compiler hash remembered between processes (codegen/run/tritonkey.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from archdsl.codegen.run import tritonkey


def test_remembered_until_a_file_changes(cache, tmp_path):
    root = tmp_path / "pkg"
    (root / "_C").mkdir(parents=True)
    (root / "a.py").write_text("x = 1\n")
    (root / "_C" / "libtriton.so").write_bytes(b"\0" * 64)
    calls = []

    def compute():
        calls.append(1)
        return f"key{len(calls)}"

    assert tritonkey.remembered(compute, str(root)) == "key1"
    assert tritonkey.remembered(compute, str(root)) == "key1" and len(calls) == 1  # read back
    (root / "_C" / "libtriton.so").write_bytes(b"\0" * 65)  # another build of the library
    assert tritonkey.remembered(compute, str(root)) == "key2" and len(calls) == 2
    os.utime(root / "a.py", ns=(1, 1))  # a source edited (its mtime moved)
    assert tritonkey.remembered(compute, str(root)) == "key3"
    tritonkey._store_file().write_text("{not json")  # a damaged store is recomputed, not trusted
    assert tritonkey.remembered(compute, str(root)) == "key4"


def test_installed_key_equals_tritons_own(cache):
    """In a fresh process: after ``install`` Triton's cache key function returns what Triton
    computes itself, first computed, then read from the store."""
    pytest.importorskip("triton")
    code = (
        "import triton.runtime.cache as c; own = c.triton_key(); "
        "from archdsl.codegen.run import tritonkey; assert tritonkey.install(); "
        "assert c.triton_key.archdsl and c.triton_key() == own; print('ok')"
    )
    env = {**os.environ, "ARCHDSL_CACHE": str(cache)}
    for _ in range(2):  # the second process reads the stored key
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-500:]
    assert tritonkey._store_file().exists()
