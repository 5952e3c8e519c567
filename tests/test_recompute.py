"""archdsl/recompute.py: values saved as the recipe that made them, remade once per backward, equal
to the forward's, and no memory held past the graph.

The layer tests run a chunked mamba2 and gdn on the Triton interpreter at small sizes; the module's
own behaviour is checked on plain torch ops.
"""

import gc
import sys
import weakref
from pathlib import Path

import pytest
import torch

from archdsl import recompute

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from saved_memory import build  # noqa: E402

SPECS = {
    "mamba2": ("specs/mamba2.rnn", {"dim": 48, "expansion": 2, "headdim": 32, "dstate": 16}),
    "gdn": ("specs/gdn.rnn", None),
}


@pytest.fixture(scope="module", params=sorted(SPECS))
def layer(request):
    spec, sizes = SPECS[request.param]
    return build(spec, "test" if sizes is None else None, sizes or {}, strategy="chunked", chunk=16)


def _produce(x: torch.Tensor, runs: list) -> torch.Tensor:
    """``x²`` made by a function whose calls ``runs`` counts, registered as recomputable."""

    def square(t):
        runs.append(1)
        return [t * t]

    with torch.no_grad():
        y = square(x)[0]
    y.requires_grad_(x.requires_grad)
    y = _Square.apply(x, y)
    recompute.recomputable([y], square, [x])
    return y


class _Square(torch.autograd.Function):
    """y = x² with y computed outside (as archdsl's custom ops do), saving y for its own backward."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x)
        return y.clone()

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return 2 * x * dy, None


def test_readers_of_one_value_share_one_rerun():
    """Three ops that save the same recomputed value read it from one rerun, and the gradient is the
    one without recomputation."""
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    z = torch.randn(5, dtype=torch.float64, requires_grad=True)
    runs: list = []
    with recompute.recomputing():
        y = _produce(x, runs)
        out = (y.sin() + y * z + y.exp()).sum()
    assert len(runs) == 1  # the forward's own call
    out.backward()
    assert len(runs) == 2, "each reader of y ran the recipe again"
    y0 = x.detach() ** 2
    assert torch.equal(z.grad, y0)
    want = (y0.cos() + z.detach() + y0.exp()) * 2 * x.detach()
    torch.testing.assert_close(x.grad, want, rtol=1e-12, atol=0)


def test_a_retained_graph_runs_backward_twice_with_equal_gradients():
    """After the first backward the rerun is no longer held; a second backward of the retained graph
    remakes what it reads and gets the same gradients."""
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    runs: list = []
    with recompute.recomputing():
        out = (_produce(x, runs).sin() * 3).sum()
    (first,) = torch.autograd.grad(out, x, retain_graph=True)
    (second,) = torch.autograd.grad(out, x)
    assert torch.equal(first, second)
    assert len(runs) >= 3


def test_a_forward_without_backward_frees_its_graph(layer):
    """A forward with gradients on whose backward never runs (an evaluation outside ``no_grad``)
    releases everything once its output is dropped: a recipe that kept a tensor of its own graph
    closed a cycle through autograd's nodes, and the chunked layers' benchmark then held 6 to 24 GiB
    more on every case it had timed."""
    x = torch.randn(2, 20, layer.ir.dim, requires_grad=True)
    y, state = layer(x)
    ref = weakref.ref(x)
    del x, y, state
    gc.collect()
    assert ref() is None, "the forward's graph is still alive"


def test_one_backward_remakes_each_value_once(layer, monkeypatch):
    """Every recipe of a layer's forward runs once in its backward, however many ops read its
    outputs (on the GPU, gdn's backward had rerun its short convolutions and per-token kernel on
    every read: +25% of the layer's GPU time)."""
    runs: dict = {}
    original = recompute._Group.__init__

    def counted(self, fn, inputs, layouts):
        def run(*args):
            runs[id(self)] = runs.get(id(self), 0) + 1
            return fn(*args)

        original(self, run, inputs, layouts)

    monkeypatch.setattr(recompute._Group, "__init__", counted)
    x = torch.randn(2, 20, layer.ir.dim, requires_grad=True)
    y, _ = layer(x)
    assert runs == {}
    y.float().square().sum().backward()
    assert runs and max(runs.values()) == 1, runs


def test_gradients_equal_with_and_without_recomputation(layer, monkeypatch):
    """The backward reads the values the forward made, bit for bit: every gradient is the same with
    ``ARCHDSL_RECOMPUTE=0``."""

    def grads():
        torch.manual_seed(0)
        x = torch.randn(2, 20, layer.ir.dim, requires_grad=True)
        layer.zero_grad()
        y, _ = layer(x)
        y.float().square().sum().backward()
        return [x.grad] + [p.grad.clone() for p in layer.parameters()]

    on = grads()
    monkeypatch.setenv("ARCHDSL_RECOMPUTE", "0")
    off = grads()
    for a, b in zip(on, off, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("recompute", ["1", "0"])
def test_a_forward_leaves_no_tensor_to_the_cycle_collector(layer, recompute, monkeypatch):
    """Everything a forward made is freed by reference counting once its output is dropped: none is
    left in a reference cycle waiting for Python's collector, which runs on the count of Python
    objects, not of GPU bytes. (The projection's two closures read each other and kept the
    projection's outputs, and through them the whole graph: the chunked layers' benchmark measured
    a peak of 6.8 to 11.9 GiB against 1.4 to 3.1 with recomputation on, on an H200.)"""
    monkeypatch.setenv("ARCHDSL_RECOMPUTE", recompute)
    x = torch.randn(2, 20, layer.ir.dim, requires_grad=True)
    layer(x)  # compiled and warm: nothing the first call caches is counted
    gc.collect()
    gc.disable()
    try:
        y, state = layer(x)
        del y, state
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [tuple(o.shape) for o in gc.garbage if isinstance(o, torch.Tensor)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not left, f"tensors freed only by the cycle collector: {left}"


@pytest.mark.parametrize("recompute", ["1", "0"])
def test_forwards_without_backward_leave_nothing_alive(layer, recompute, monkeypatch):
    """Forwards with gradients on whose backward never runs (an evaluation outside ``no_grad``) leave
    no tensor alive once their outputs are dropped, collector run or not. An op that saves its own
    output, saved as it was (with its history), held its node, the hooks and every recipe of the
    forward in a cycle through autograd's C++ nodes: on an H200, GDN_100m at B 8 × T 512 held 47 MB
    more after every such call (benchmarks/leftovers.py)."""
    monkeypatch.setenv("ARCHDSL_RECOMPUTE", recompute)
    x = torch.randn(2, 20, layer.ir.dim, requires_grad=True)

    def live() -> int:
        gc.collect()
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())

    layer(x)  # compiled and warm
    before = live()
    for _ in range(3):
        y, state = layer(x)
        del y, state
    assert live() == before


def test_a_compiled_model_turns_the_recomputation_off(layer, monkeypatch):
    """``archdsl train --compile`` (trainer.compiled) sets ``recompute = False`` in every spec layer,
    and such a layer's forward registers no recipe: under torch.compile the parts of a call that run
    eagerly had set these hooks, which were traced into the compiled graphs (gdn.rnn with CUDA graphs
    failed in its first backward on the GPU)."""
    from archdsl.train.config import TrainConfig
    from archdsl.train.trainer import compiled

    model = torch.nn.Sequential(layer)
    groups: list = []
    original = recompute._Group.__init__
    monkeypatch.setattr(
        recompute._Group, "__init__", lambda self, *a: (groups.append(1), original(self, *a))[1]
    )
    x = torch.randn(2, 20, layer.ir.dim, requires_grad=True)
    layer(x)
    assert groups, "the layer's forward registered no recipe: the test would not see one"
    groups.clear()
    compiled(model, TrainConfig(compile=True, compile_backend="eager"))
    try:
        assert layer.recompute is False
        layer(x)
        assert groups == []
    finally:
        layer.recompute = True  # the module-scoped fixture is shared


#: run in its own interpreter: a compiled call with a graph break leaves dynamo state behind (stack
#: summaries kept for its graphs) that makes later eager forwards of the process leave cycles, which
#: test_a_forward_leaves_no_tensor_to_the_cycle_collector would count
GRAPH_BREAK = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from saved_memory import build
from archdsl import recompute
layer = build(sys.argv[2], "test", {}, strategy="chunked", chunk=16)
groups = []
original = recompute._Group.__init__
recompute._Group.__init__ = lambda self, *a: (groups.append(1), original(self, *a))[1]
inner = type(layer)._forward
def broken(self, *args, **kwargs):
    torch._dynamo.graph_break()
    return inner(self, *args, **kwargs)
type(layer)._forward = broken
x = torch.randn(2, 20, layer.ir.dim, requires_grad=True)
y, _ = torch.compile(layer, backend="eager")(x)
y.float().square().sum().backward()
print("recipes", len(groups))
"""


def test_no_recipe_after_a_graph_break_under_torch_compile():
    """A graph break inside the layer's forward makes the rest of it run eagerly inside the compiled
    call (``is_compiling()`` false); the hooks set there were traced by dynamo until its recompile
    limit (what the GPU showed before gdn.rnn's CUDA-graph run failed: 8 recipes registered here on
    the previous code). None is set now."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    args = [sys.executable, "-c", GRAPH_BREAK, str(root / "benchmarks"), str(root / "specs" / "gdn.rnn")]
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["recipes", "0"], out.stdout
