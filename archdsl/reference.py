"""The reference interpreter: the definition of what a spec means.

A plain fp32 loop over time that evaluates the IR with PyTorch ops (``TORCH[op]``). It is never
optimised; when a kernel and the reference disagree, the kernel is wrong.

Layout: a value with axes ``A`` (a subset of the layer's axes) is held as a tensor of shape
``[*batch, s_1, ..., s_K]`` over *all* K layer axes, with 1 where the value has no axis. Elementwise
ops then broadcast by name for free, ``SUM`` keeps its axis as size 1, and ``RENAME`` is a permute.
The generated Triton kernels use the same layout for their register blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from archdsl.ir import Kind, LayerIR, Node, Op

TORCH: dict[Op, Callable] = {
    Op.NEG: torch.neg,
    Op.EXP: torch.exp,
    Op.LOG: torch.log,
    Op.TANH: torch.tanh,
    Op.SIGMOID: torch.sigmoid,
    Op.SOFTPLUS: F.softplus,
    Op.RELU: torch.relu,
    Op.ABS: torch.abs,
    Op.SQRT: torch.sqrt,
    Op.STEP: lambda a: (a > 0).to(a.dtype),
    Op.SIGN: torch.sign,
    Op.COS: torch.cos,
    Op.SIN: torch.sin,
    Op.ADD: torch.add,
    Op.SUB: torch.sub,
    Op.MUL: torch.mul,
    Op.DIV: torch.div,
    Op.MAXIMUM: torch.maximum,
    Op.MINIMUM: torch.minimum,
}


def rename_permutation(axes: tuple[str, ...], mapping) -> list[int]:
    """The permutation of the full layout that moves each renamed axis onto its new position."""
    pos = {a: k for k, a in enumerate(axes)}
    perm: dict[int, int] = {pos[new]: pos[old] for old, new in mapping}
    free_targets = [p for p in range(len(axes)) if p not in perm]
    free_sources = [p for p in range(len(axes)) if p not in perm.values()]
    for p in list(free_targets):
        if p in free_sources:
            perm[p] = p
            free_targets.remove(p)
            free_sources.remove(p)
    perm.update(zip(free_targets, free_sources))  # singleton dims trade places
    return [perm[p] for p in range(len(axes))]


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """fp32 for fp32/bf16/fp16 data (state and accumulation are always fp32); fp64 stays fp64."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def storage_dtype(x: torch.Tensor) -> torch.dtype:
    """The type ``rounded()`` rounds to: the one the layer's projections produce from ``x`` (its own
    16-bit type, or autocast's where autocast is on for its device), else ``x``'s (no rounding)."""
    if x.dtype in (torch.bfloat16, torch.float16):
        return x.dtype
    if x.dtype == torch.float32 and torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class Layout:
    """Converts between compact tensors ``[*batch, *sizes(axes)]`` and the full layout."""

    def __init__(self, layer: LayerIR, dtype: torch.dtype = torch.float32, device=None, storage=None):
        self.layer = layer
        self.axes = layer.axes
        self.dtype, self.device = dtype, device
        self.storage = storage or dtype  # what ``rounded()`` rounds to (see ``storage_dtype``)

    def shape(self, axes) -> list[int]:
        return [self.layer.sizes[a] if a in axes else 1 for a in self.axes]

    def full(self, t: torch.Tensor, axes, nbatch: int) -> torch.Tensor:
        return t.reshape(*t.shape[:nbatch], *self.shape(axes))

    def compact(self, t: torch.Tensor, axes, batch: tuple[int, ...]) -> torch.Tensor:
        t = (
            t.expand(*batch, *self.shape(axes))
            if t.dim() < len(batch) + len(self.axes) or any(s == 1 and b != 1 for s, b in zip(t.shape, batch))
            else t
        )
        return t.reshape((*batch, *(self.layer.sizes[a] for a in axes)))  # () for a scalar


def apply(node: Node, args: list[torch.Tensor], layout: Layout) -> torch.Tensor:
    """One IR op on full-layout tensors (leaves are handled by the caller). A rounded value is held in
    the storage type and read as the exact number it is: an op whose arguments are all rounded
    computes in the layout's type, and torch promotes a rounded argument beside any other."""
    op = node.op
    if op is Op.ROUND:  # autograd rounds the gradient on its way back through the cast
        return args[0].to(layout.storage)
    if args and all(a.dtype != layout.dtype for a in args):
        args = [args[0].to(layout.dtype), *args[1:]]
    if op in TORCH:
        return TORCH[op](*args)
    if op is Op.SUM:
        return args[0].sum(dim=args[0].dim() - len(layout.axes) + layout.axes.index(node.attr), keepdim=True)
    if op is Op.RENAME:
        nb = args[0].dim() - len(layout.axes)
        perm = rename_permutation(layout.axes, node.attr)
        return args[0].permute(*range(nb), *(nb + p for p in perm))
    if op is Op.EXPAND:
        a = args[0]
        shape = list(a.shape)
        nb = a.dim() - len(layout.axes)
        for ax in node.attr:
            shape[nb + layout.axes.index(ax)] = layout.layer.sizes[ax]
        return a.expand(*shape)
    if op in (Op.SHIFT, Op.UNSHIFT):
        return shift(args[0], node, layout)
    if op is Op.INDEX:
        size = layout.layer.sizes[node.attr]
        return torch.arange(size, dtype=layout.dtype, device=layout.device).reshape(
            layout.shape((node.attr,))
        )
    raise NotImplementedError(f"no torch rule for {op}")


def _delay(a: torch.Tensor, d: int, dim: int) -> torch.Tensor:
    """``a`` moved ``d`` steps later along ``dim`` (zeros first); ``d < 0`` moves it earlier."""
    T = a.shape[dim]
    if d == 0:
        return a
    if abs(d) >= T:
        return torch.zeros_like(a)
    zeros = torch.zeros_like(a.narrow(dim, 0, abs(d)))
    if d > 0:
        return torch.cat([zeros, a.narrow(dim, 0, T - d)], dim=dim)
    return torch.cat([a.narrow(dim, -d, T + d), zeros], dim=dim)


def shift(a: torch.Tensor, node: Node, layout: Layout) -> torch.Tensor:
    """``SHIFT`` / ``UNSHIFT`` on a full-layout tensor whose last batch dimension is time."""
    nb = a.dim() - len(layout.axes)
    assert nb >= 1, "a shift needs a time dimension"
    time, sign = nb - 1, 1 if node.op is Op.SHIFT else -1
    if node.attr is None:
        return _delay(a, sign, time)
    c = nb + layout.axes.index(node.attr)
    C = layout.layer.sizes[node.attr]
    if node.op is Op.SHIFT:  # window position k holds the token C-1-k steps back
        return torch.cat([_delay(a, C - 1 - k, time) for k in range(C)], dim=c)
    return sum(_delay(a.narrow(c, k, 1), k + 1 - C, time) for k in range(C))


def evaluate(
    layer: LayerIR,
    order,
    env: dict[int, torch.Tensor],
    leaf: Callable[[int, Node], torch.Tensor],
    layout: Layout | None = None,
) -> dict[int, torch.Tensor]:
    """Evaluate the nodes ``order`` (ascending ids) into ``env``; ``leaf`` supplies leaves."""
    layout = layout or Layout(layer)
    for i in order:
        if i in env:
            continue
        node = layer.graph[i]
        if node.op is Op.CONST:
            env[i] = torch.tensor(node.attr, dtype=layout.dtype, device=layout.device).reshape(
                [1] * len(layout.axes)
            )
        elif node.op in (Op.INPUT, Op.PARAM, Op.STATE, Op.SPECTRAL_NORM, Op.POSITION):
            env[i] = leaf(i, node)  # a position is per-call data, like an input: the caller's
        else:
            env[i] = apply(node, [env[a] for a in node.args], layout)
    return env


def reference_cell(
    layer: LayerIR,
    inputs: Mapping[str, torch.Tensor],
    frontier: Mapping[int, torch.Tensor],
    state0: Mapping[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run the cell over time.

    inputs: name -> [B, T, *axes]; frontier: node -> its value (compact, no batch), see
    ``LayerIR.frontier``; state0: name -> [B, *axes] (zeros when absent).
    Returns the readout [B, T, *axes of the output] and the final states {name: [B, *axes]}.
    """
    g = layer.graph
    any_input = next(iter(inputs.values()))
    B, T = any_input.shape[:2]
    dev, dt = any_input.device, compute_dtype(any_input)
    layout = Layout(layer, dt, dev)
    kinds = g.kinds()
    cell = sorted(i for i in layer.cell_nodes() if kinds[i] != Kind.CONST or g[i].op is Op.CONST)
    states = {}
    for name, axes in layer.states.items():
        s0 = state0.get(name) if state0 else None
        s0 = (
            torch.zeros(B, *(layer.sizes[a] for a in axes), device=dev, dtype=dt) if s0 is None else s0.to(dt)
        )
        states[name] = layout.full(s0, axes, 1)
    consts = {i: layout.full(v.to(dt), g[i].axes, 0) for i, v in frontier.items()}
    outs = []
    for t in range(T):

        def leaf(i, node, t=t, states=states):
            if node.op is Op.INPUT:
                return layout.full(inputs[node.attr][:, t].to(dt), node.axes, 1)
            if node.op is Op.STATE:
                return states[node.attr]
            raise AssertionError(f"unexpected leaf {node}")

        env = evaluate(layer, cell, dict(consts), leaf, layout)
        states = {
            name: env[n].expand(B, *layout.shape(layer.states[name])) for name, n in layer.next_state.items()
        }
        outs.append(env[layer.output_node].expand(B, *layout.shape(g[layer.output_node].axes)))
    y = torch.stack(outs, dim=1)
    out_axes = g[layer.output_node].axes
    y = y.reshape(B, T, *(layer.sizes[a] for a in out_axes))
    final = {name: layout.compact(states[name], axes, (B,)) for name, axes in layer.states.items()}
    return y, final
