"""tests/interpreter_patch.py: installed for the suite's interpreter runs, and a kernel that calls a
helper of its own and one of Triton's (``tl.sigmoid``, from standard.py, which sees
``triton.language.core``) computes what PyTorch does, with the language restored after it."""

from __future__ import annotations

import os

import pytest
import torch
import triton
import triton.language as tl

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="the CPU interpreter only")


@triton.jit
def _twice(x):
    return x * 2.0


@triton.jit
def _kernel(x, y, N: tl.constexpr):
    r = tl.arange(0, N)
    tl.store(y + r, tl.sigmoid(_twice(tl.load(x + r))) + tl.exp(tl.load(x + r)))


def test_installed_and_exact():
    from triton.runtime import interpreter

    assert getattr(interpreter._patch_lang, "archdsl_once", False)
    builtin = tl.exp
    x = torch.linspace(-3, 3, 16)
    y = torch.empty(16)
    for _ in range(2):  # the second run starts from the restored language
        _kernel[(1,)](x, y, N=16)
        assert torch.allclose(y, torch.sigmoid(2 * x) + torch.exp(x), rtol=1e-6, atol=1e-6)
        assert tl.exp is builtin  # the kernel's mapping, and its helpers', undone
