"""A compiled layer's first call in a fresh process: eager calls run the ops as plain autograd
functions (codegen/run/ops.py ``Op``), the same numbers as the custom ops, without TorchDynamo."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from archdsl.codegen.run import ops

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer

SMALL = {  # one spec per strategy, at a size the interpreter runs in a second
    "loop": ("e88", {"dim": 16, "heads": 2, "n": 4}),
    "chunked": ("mamba2", {"dim": 16, "headdim": 4, "dstate": 4}),
}


def layer_of(name: str, **overrides):
    return instantiate(parse_file(f"specs/{name}.rnn"), overrides=overrides).layer


def grads_of(layer, strategy: str, B: int, T: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    m = RecurrentLayer(
        layer, backend="triton", seed=0, chunk=4 if strategy == "loop" else None, strategy=strategy
    )
    x = torch.randn(B, T, layer.dim, requires_grad=True)
    y, final = m(x)
    loss = (y * y).sum() + sum((v * v).sum() for v in final.values())
    return [y.detach(), *torch.autograd.grad(loss, [x, *m.parameters()], allow_unused=True)]


@pytest.mark.parametrize("strategy", ["loop", "chunked"])
def test_eager_calls_match_the_custom_ops(strategy, monkeypatch):
    name, overrides = SMALL[strategy]
    layer = layer_of(name, **overrides)
    eager = grads_of(layer, strategy, 2, 6)
    calls = []

    def custom(self, *args):
        calls.append(self.custom)
        return self.custom(*args)

    monkeypatch.setattr(ops.Op, "__call__", custom)
    traced = grads_of(layer, strategy, 2, 6)
    assert calls, "the layer did not go through an Op"
    assert len(eager) == len(traced)
    for a, b in zip(eager, traced):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a, b)
    assert any(g is not None and g.abs().sum() > 0 for g in eager[1:])


def test_no_grad_calls_skip_autograd():
    name, overrides = SMALL["loop"]
    m = RecurrentLayer(layer_of(name, **overrides), backend="triton", seed=0, chunk=4)
    with torch.no_grad():
        y, _ = m(torch.randn(1, 3, m.ir.dim))
    assert y.grad_fn is None and torch.isfinite(y).all()


@pytest.mark.parametrize("strategy", ["loop", "chunked"])
def test_a_first_call_does_not_import_dynamo(strategy, tmp_path):
    """A custom op's first eager call imports torch._dynamo, ``torch.broadcast_shapes`` SymPy (seconds
    each); the layer's first call, short convolutions included, imports neither, and a cell on another
    strategy never imports the chunked kernels' modules (about 80 ``@triton.jit`` functions)."""
    name, overrides = SMALL[strategy]
    unwanted = ["torch._dynamo", "sympy"]
    if strategy != "chunked":
        unwanted += [
            f"archdsl.codegen.run.{m}"
            for m in ("chunked", "chunked_common", "chunked_kernels", "chunked_backward")
        ]
    code = (
        "import sys, torch\n"
        "from archdsl.lang.checker import instantiate\n"
        "from archdsl.lang.parser import parse_file\n"
        "from archdsl.layer import RecurrentLayer\n"
        f"layer = instantiate(parse_file('specs/{name}.rnn'), overrides={overrides!r}).layer\n"
        f"m = RecurrentLayer(layer, backend='triton', seed=0, strategy={strategy!r})\n"
        "x = torch.randn(1, 3, layer.dim, requires_grad=True)\n"
        "m(x)[0].sum().backward()\n"
        "assert x.grad.abs().sum() > 0\n"
        f"print(' '.join(m for m in {unwanted!r} if m in sys.modules) or 'clean')\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="1", ARCHDSL_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "clean"


def compiled_into(cache, monkeypatch):
    from archdsl.codegen import build_cell

    monkeypatch.setenv("ARCHDSL_CACHE", str(cache))
    name, overrides = SMALL["loop"]
    return build_cell(layer_of(name, **overrides), 4, None, None)


def test_a_new_module_prints_one_progress_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARCHDSL_PROGRESS", "1")
    compiled_into(tmp_path, monkeypatch)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("archdsl: compiling e88 (loop strategy): new kernels in ")
    compiled_into(tmp_path, monkeypatch)  # the module is in the cache now: nothing to say
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("setting", ["0", None])
def test_progress_is_quiet_when_off_or_not_a_terminal(setting, tmp_path, monkeypatch, capsys):
    if setting is None:
        monkeypatch.delenv("ARCHDSL_PROGRESS", raising=False)  # captured stderr is not a terminal
    else:
        monkeypatch.setenv("ARCHDSL_PROGRESS", setting)
    compiled_into(tmp_path, monkeypatch)
    assert capsys.readouterr().err == ""


def test_quiet_blocks_silence_progress(monkeypatch, capsys):
    from archdsl.codegen.run.progress import progress, quiet

    monkeypatch.setenv("ARCHDSL_PROGRESS", "1")
    with quiet():
        progress("hidden")
    progress("shown")
    assert capsys.readouterr().err == "archdsl: shown\n"
