"""Plumbing of the per-op oracles (tests/test_ops.py) and the structure tests.

Three independent checks of an IR op:

- ``vjp_vs_autograd``: a graph of the op alone on named-axis leaves, its backward derived with
  archdsl's own rules (``autodiff.VJP``) and evaluated, against ``torch.autograd.grad`` of the same
  op in torch (fp64);
- ``reference_vs_torch``: ``reference.apply`` of the op against a plain fp64 torch formula;
- ``kernel_vs_reference``: a tiny spec compiled to Triton (the CPU interpreter) against the reference
  interpreter on chosen inputs: the outputs, final states and every gradient.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch
from kernel_harness import assert_close

from archdsl.autodiff import GRAD, derive_token_backward
from archdsl.ir import Graph, LayerIR, Node, Op
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse
from archdsl.reference import Layout, apply, evaluate, reference_cell


def fill(values, shape, offset: int = 0) -> torch.Tensor:
    """A tensor of ``shape`` that cycles through ``values`` (every value appears when it is large
    enough), starting at ``offset``: deterministic, so the branches it reaches do not depend on a seed."""
    n = 1
    for s in shape:
        n *= s
    vals = list(values)
    flat = [vals[(k + offset) % len(vals)] for k in range(n)]
    return torch.tensor(flat, dtype=torch.float64).reshape(shape)


def shim(graph: Graph, sizes: dict[str, int]):
    """What the reference's ``evaluate``/``Layout`` read of a layer: its graph, axes and sizes."""
    return SimpleNamespace(graph=graph, axes=tuple(sizes), sizes=dict(sizes))


# ---- (a) a VJP rule against torch autograd ------------------------------------------------------
def derived_vjp(
    sizes, leaves: dict[str, tuple], build, values: dict, dz: torch.Tensor, params=(), storage=None
) -> dict:
    """Gradients of the leaves from archdsl's derived backward, evaluated in fp64.

    ``leaves``: name -> axes of the per-token inputs (``params``: those that are learned parameters
    instead); ``build(graph, ids) -> node`` adds the op; ``values``: name -> compact fp64 tensor;
    ``dz``: the cotangent of the op's result (compact); ``storage``: what ``rounded()`` rounds to."""
    g = Graph()
    ids = {n: g.add(Node(Op.PARAM if n in params else Op.INPUT, (), ax, n)) for n, ax in leaves.items()}
    z = build(g, ids)
    inputs = {n: ax for n, ax in leaves.items() if n not in params}
    consts = {n: ax for n, ax in leaves.items() if n in params}
    bwd = derive_token_backward(g, tuple(sizes), {"z": z}, inputs, consts)
    lay = shim(bwd.graph, sizes)
    layout = Layout(lay, torch.float64, storage=storage)
    feed = {**values, GRAD + "z": dz}

    def leaf(i, node):
        return layout.full(feed[node.attr], node.axes, 0)

    grads = {**bwd.d_inputs, **bwd.d_consts}
    env = evaluate(lay, sorted(bwd.graph.ancestors(grads.values())), {}, leaf, layout)
    return {n: layout.compact(env[i], leaves[n], ()) for n, i in grads.items()}


def autograd_vjp(fn, values: dict, dz: torch.Tensor) -> dict:
    """``torch.autograd.grad`` of ``fn(**values)`` with cotangent ``dz`` (zeros where no path)."""
    xs = {k: v.clone().requires_grad_(True) for k, v in values.items()}
    z = fn(*xs.values())
    if not z.requires_grad:  # a piecewise-constant op: no gradient anywhere
        return {k: torch.zeros_like(v) for k, v in values.items()}
    grads = torch.autograd.grad(z, list(xs.values()), dz, allow_unused=True)
    return {k: torch.zeros_like(v) if d is None else d for (k, v), d in zip(xs.items(), grads)}


# ---- (b) the reference's semantics against torch --------------------------------------------
def reference_apply(
    node: Node, sizes, args: list[tuple[torch.Tensor, tuple]], dtype=torch.float32, storage=None
):
    """``reference.apply`` of one node on compact arguments (no batch); the result compact."""
    lay = shim(Graph(), sizes)
    layout = Layout(lay, dtype, storage=storage)
    full = [layout.full(t.to(dtype), ax, 0) for t, ax in args]
    return layout.compact(apply(node, full, layout), node.axes, ())


# ---- (c) a compiled spec against the reference --------------------------------------------------
def layer_of(src: str, name: str = "op.rnn") -> LayerIR:
    return instantiate(parse(src, name)).layer


def swap_op(layer: LayerIR, old: Op, new: Op) -> LayerIR:
    """The layer with every ``old`` node turned into ``new`` (ops the language does not spell, such
    as ``STEP`` and ``SIGN``, which only derived backwards use)."""
    g = Graph()
    for n in layer.graph.nodes:
        g.add(dataclasses.replace(n, op=new) if n.op is old else n)
    assert len(g) == len(layer.graph)
    return dataclasses.replace(layer, graph=g)


def frontier_of(layer: LayerIR, params: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """The parameter-only values the cell reads, computed from ``params`` (differentiably)."""
    front = layer.frontier()
    layout = Layout(layer, device=next(iter(params.values())).device if params else None)
    g = layer.graph

    def leaf(i, node):
        if node.op is Op.SPECTRAL_NORM:  # rho * W / sigma_max(W), exactly
            w = params[g[node.args[0]].attr]
            return layout.full(node.attr * w / torch.linalg.matrix_norm(w, ord=2), node.axes, 0)
        return layout.full(params[node.attr], node.axes, 0)

    env = evaluate(layer, sorted(g.ancestors(front)), {}, leaf, layout)
    return {i: layout.compact(env[i], layer.graph[i].axes, ()) for i in front}


def kernel_vs_reference(
    layer: LayerIR,
    inputs: dict[str, torch.Tensor],
    params: dict[str, torch.Tensor] | None = None,
    chunk: int = 4,
    tile: int | None = 2,
    tol: float = 1e-5,
    cell=None,
    device: str = "cpu",
) -> dict[str, float]:
    """Forward and backward of the compiled cell against the reference on the same values.

    ``inputs``: name -> [B, T, *axes]; with B >= 2 and T not a multiple of ``chunk``, the tokens past
    a batch element's T are the next element's (non-zero) tokens, and the last segment is partial.
    ``cell``: an already built compiled cell (else ``build_cell``); ``device``: where both run."""
    from archdsl.codegen import build_cell

    params = params or {}
    B = next(iter(inputs.values())).shape[0]
    gen = torch.Generator().manual_seed(0)
    h0 = {
        s: 0.5 * torch.randn(B, *(layer.sizes[a] for a in ax), generator=gen)
        for s, ax in layer.states.items()
    }
    cc = cell or build_cell(layer, chunk, tile, 1)
    results = []
    for run in (cc, lambda xs, fr, h: reference_cell(layer, xs, fr, h)):
        xs = {k: v.detach().float().to(device).requires_grad_(True) for k, v in inputs.items()}
        ps = {k: v.detach().float().to(device).requires_grad_(True) for k, v in params.items()}
        hs = {k: v.clone().to(device).requires_grad_(True) for k, v in h0.items()}
        y, final = run(xs, frontier_of(layer, ps), hs)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(device)
        loss = (y.float() * w).sum() + sum((v * v).sum() for v in final.values())
        leaves = [*xs.values(), *hs.values(), *ps.values()]
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        grads = [torch.zeros_like(x) if d is None else d for x, d in zip(leaves, grads)]
        names = [f"d{k}" for k in [*xs, *hs, *ps]]
        results.append(
            {"y": y.float(), **{f"final {k}": v for k, v in final.items()}, **dict(zip(names, grads))}
        )
    ker, ref = results
    return {k: assert_close(k, ker[k], ref[k], tol) for k in ref}


def default_params(layer: LayerIR) -> dict[str, torch.Tensor]:
    """The layer's learned parameters at their initialisation (seed 0)."""
    from archdsl.layer import RecurrentLayer

    return {k: v.detach() for k, v in RecurrentLayer(layer, seed=0).params.items()}


def random_inputs(layer: LayerIR, B: int, T: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        n: torch.randn(B, T, *(layer.sizes[a] for a in ax), generator=gen) for n, ax in layer.inputs().items()
    }
