"""``RecurrentLayer``: a checked spec as a PyTorch module, with a choice of cell backend.

forward = projections (GEMMs, per token) -> the cell (the recurrence: ``reference`` loop or a
generated ``triton`` kernel) -> flatten the readout -> output projection back to ``dim``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from archdsl.convolve import Conv, depthwise_conv, find_convs
from archdsl.inits import initialise
from archdsl.ir import LayerIR, Node, Op, Projection
from archdsl.layer_io import (
    HISTORY,
    POSITION,
    LayerInputError,
    ProjTable,
    check_input,
    lookback,
    projection_keys,
    reads_position,
    rename_positional,
)
from archdsl.layer_params import ParamTable, SpectralNorm
from archdsl.packed import check_packed, packed_cell, packed_positions
from archdsl.recompute import recomputing
from archdsl.reference import Layout, compute_dtype, evaluate, reference_cell, storage_dtype

BACKENDS = ("reference", "triton")


class RecurrentLayer(nn.Module):
    """A spec's layer: ``forward(x [B, T, dim], state=None) -> (y [B, T, dim], final states)``.

    ``state`` (and the returned states) is a dict from the spec's state names to tensors
    [B, *axes] (fp32; zeros when absent). ``step(x_t [B, dim], state)`` runs one token. Parameters:
    ``proj.<outputs>.weight`` (one weight per ``project`` line, e.g. ``proj.q_k_v.weight``; a
    single output's rows as [*axes, in] by ``projection_weight(name)``; the lines that read ``x`` run
    as one GEMM over many tokens), ``params.<name>`` (the spec's ``param`` lines) and ``out.weight``
    (the output projection back to ``dim``)."""

    #: cheap saved values remade in the backward (archdsl/recompute.py); a compiled model sets False
    recompute: bool = True

    def __init__(
        self,
        layer: LayerIR,
        backend: str = "reference",
        seed: int | None = None,
        spectral_iters: int = 3,
        **compile_options,
    ):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
        self.ir, self.backend = layer, backend
        self.layout = Layout(layer)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        nums = layer.numbers
        self.proj = ProjTable()
        self.proj_sn = ProjTable()
        self.proj_keys = projection_keys(layer)
        self.lookback = lookback(layer)  # earlier tokens its shifts and convolutions read
        self.reads_position = reads_position(layer)  # a sequence value reads position()
        self._register_load_state_dict_pre_hook(self._rename_old_keys)
        for key, p in zip(self.proj_keys, layer.projections):
            n_out, n_in = self._proj_shape(p)
            lin = nn.Linear(n_in, n_out, bias=p.bias)
            with torch.no_grad():
                lin.weight.copy_(initialise(p.init, (n_out, n_in), ("out", "in"), nums, gen))
                if p.bias:
                    lin.bias.copy_(self._bias(p, nums, gen))
            self.proj[key] = lin
            if p.spectral_norm is not None:
                self.proj_sn[key] = SpectralNorm(n_out, p.spectral_norm, spectral_iters)
        self.params = ParamTable(
            {
                p.name: nn.Parameter(
                    initialise(p.init, tuple(layer.sizes[a] for a in p.axes), p.axes, nums, gen)
                )
                for p in layer.params
            }
        )
        self.sn = nn.ModuleDict(
            {
                str(i): SpectralNorm(layer.sizes[n.axes[0]], n.attr, spectral_iters)
                for i, n in enumerate(layer.graph.nodes)
                if n.op is Op.SPECTRAL_NORM
            }
        )
        n_y = layer.numel(layer.graph[layer.output_node].axes)
        self.out = nn.Linear(n_y, layer.dim, bias=False)
        with torch.no_grad():
            self.out.weight.copy_(initialise(layer.output_init, (layer.dim, n_y), ("out", "in"), nums, gen))
        self._cell = None
        self.compile_options = compile_options
        # static facts of the IR, computed once (torch.compile then traces only tensor work)
        self._inputs, self._frontier = tuple(layer.inputs()), tuple(layer.frontier())
        self._frontier_order = sorted(layer.graph.ancestors(self._frontier))
        self._pre_order = {name: sorted(layer.graph.ancestors([node])) for name, node in layer.pre.items()}
        self._convs, self._sequence_order = _fused_convolutions(layer)
        self._projection_of = {name: k for k, p in enumerate(layer.projections) for name, _ in p.outputs}
        self._x_gemm = _x_gemm(layer)
        self._x_axes = next((n.axes for n in layer.graph.nodes if n.op is Op.INPUT and n.attr == "x"), ())

    def _bias(self, p: Projection, nums: dict, gen) -> torch.Tensor:
        """The concatenated bias: each output's slice from ``bias(EXPR)`` on that output's axes
        (so ``linspace[i]`` runs along its ``i``), flattened as the output's rows are; zeros without."""
        if p.bias_init is None:
            return torch.zeros(sum(self.ir.numel(ax) for _, ax in p.outputs))
        pieces = [
            initialise(p.bias_init, tuple(self.ir.sizes[a] for a in ax), ax, nums, gen).reshape(-1)
            for _, ax in p.outputs
        ]
        return torch.cat(pieces)

    def _proj_shape(self, p: Projection) -> tuple[int, int]:
        n_out = sum(self.ir.numel(ax) for _, ax in p.outputs)
        n_in = self.ir.dim if p.source == "x" else self.ir.numel(p.source_axes)
        return n_out, n_in

    # ---- the per-token part ----------------------------------------------------------------------
    def project(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """All projection outputs and sequence values, [B, T, *axes] each, each computed when first
        needed (a projection may read a sequence value, ``shift``/``conv``, and the reverse).
        ``positions``: what ``position()`` reads ([B, T] or [T]; 0, 1, …, T - 1 when None). Nothing
        is left in a reference cycle: the values are freed when the caller drops them."""
        ir, B, T = self.ir, x.shape[0], x.shape[1]
        # under autocast, x rounded once for every projection that reads it (each linear would round
        # its own copy: GDN_100m's two projections of x, two casts of [B, T, dim] and their gradients)
        reads_x = any(p.source == "x" for p in ir.projections)
        x_in = x.to(storage_dtype(x)) if reads_x else x
        values: dict[str, torch.Tensor] = {}  # by name, and every node's value on the way (env)
        env: dict[int, torch.Tensor] = {}
        layout = Layout(ir, compute_dtype(x), x.device, storage_dtype(x))
        const_leaf = self._const_leaf(layout)
        fns: dict = {}  # leaf and get read get through it, emptied at the end: no cycle holds the values

        def leaf(i, node):
            if node.op is Op.INPUT:
                return layout.full(fns["get"](node.attr).to(layout.dtype), node.axes, 2)
            if node.op is Op.POSITION:
                pos = torch.arange(T, device=x.device) if positions is None else positions
                return layout.full(pos.expand(B, T).to(layout.dtype), (), 2)
            return const_leaf(i, node)

        def get(name: str) -> torch.Tensor:
            if name not in values:
                if name == "x":  # the layer input read in the step (x[d])
                    values[name] = x.reshape(B, T, *(ir.sizes[a] for a in self._x_axes))
                elif name in ir.sequence:
                    node = ir.sequence[name]
                    for conv in self._convs[name]:  # each short convolution by one conv1d
                        self._convolve(conv, env, leaf, layout, fns["get"])
                    evaluate(ir, self._sequence_order[name], env, leaf, layout)
                    values[name] = layout.compact(env[node], ir.graph[node].axes, (B, T))
                else:
                    self._project_one(self._projection_of[name], x_in, values, env, leaf, layout)
            return values[name]

        fns["get"] = get
        for name in [*self._projection_of, *ir.sequence, *(["x"] if self._x_axes else [])]:
            get(name)
        fns.clear()
        return values

    def _convolve(self, conv: _FusedConv, env, leaf, layout, get) -> None:
        """One short convolution (its bias and silu included) into ``env``; a signal that is a
        per-token input is read in its own type (the triton backend's kernel converts as it reads)."""
        key = conv.out if conv.silu is None else conv.silu
        if key in env:
            return
        evaluate(self.ir, conv.order, env, leaf, layout)
        c, node = conv.conv, self.ir.graph[conv.conv.signal]
        signal = layout.full(get(node.attr), node.axes, 2) if node.op is Op.INPUT else env[c.signal]
        bias = None if conv.bias is None else env[conv.bias]
        kernel = self.backend == "triton"
        env[key] = depthwise_conv(signal, env[c.weight], layout, c.axis, bias, conv.silu is not None, kernel)

    def _project_one(self, k: int, x, values, env, leaf, layout) -> None:
        ir, p, (B, T) = self.ir, self.ir.projections[k], x.shape[:2]
        if k in self._x_gemm and x.shape[0] * x.shape[1] >= self._x_rows():  # every plain one of x at once
            w, bias = self._x_weights(x.dtype)
            self._split(nn.functional.linear(x, w, bias), self._x_gemm, values)
            return
        if p.source == "x":
            src = x
        else:
            node = ir.pre[p.source]
            evaluate(ir, self._pre_order[p.source], env, leaf, layout)
            src = layout.compact(env[node], p.source_axes, (B, T)).reshape(B, T, -1).to(x.dtype)
        key = self.proj_keys[k]
        w = self.proj[key].weight
        if key in self.proj_sn:
            w = self.proj_sn[key](w)
        self._split(nn.functional.linear(src, w, self.proj[key].bias), (k,), values)

    def _x_rows(self) -> int:
        """The rows of ``_x_weights``' stack. Stacking copies the weights every call, so one GEMM is
        taken where the tokens are at least as many: a training or prefill batch, not a decode step
        (``step``: a few tokens, where the projections read their weights once each and the copy
        would read and write them again)."""
        rows = sum(self.proj[self.proj_keys[k]].out_features for k in self._x_gemm)
        return rows + -rows % 8  # and the padding (``_x_weights``)

    def _x_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weights (and biases: zeros where a projection has none) of the projections in
        ``_x_gemm`` stacked in ``dtype``, x's (one GEMM reads x once, and its backward writes x's
        gradient once, not a sum of one a projection), with zero rows up to a multiple of 8: rows of
        whole 16 bytes, without which cuBLAS takes slower kernels (on an H200 E88_d12h32's 1,164
        rows ran its GEMMs at a third of the speed of 1,152 and 12 apart)."""
        lins = [self.proj[self.proj_keys[k]] for k in self._x_gemm]
        zero = lins[0].weight.new_zeros((), dtype=dtype)
        pad = -sum(lin.out_features for lin in lins) % 8
        w = torch.cat([*(lin.weight.to(dtype) for lin in lins), zero.expand(pad, lins[0].in_features)])
        if all(lin.bias is None for lin in lins):
            return w, None
        biases = [zero.expand(lin.out_features) if lin.bias is None else lin.bias.to(dtype) for lin in lins]
        return w, torch.cat([*biases, zero.expand(pad)])

    def _split(self, out: torch.Tensor, projections, values) -> None:
        """The outputs of ``projections`` (indices) from their GEMM's ``out`` [B, T, Σ (and padding
        columns, dropped)] into ``values``."""
        ir, (B, T) = self.ir, out.shape[:2]
        outputs = [o for k in projections for o in ir.projections[k].outputs]
        sizes = [ir.numel(axes) for _, axes in outputs]
        # one split, not a slice per output: its backward is one concatenation of the outputs'
        # gradients, where slices' would each scatter into a zero tensor of the whole width and add
        rest = out.shape[-1] - sum(sizes)  # the padding's columns (an empty piece would add a zeros op)
        pieces = out.split([*sizes, rest] if rest else sizes, -1)
        for (name, axes), piece in zip(outputs, pieces):
            values[name] = piece.reshape(B, T, *(ir.sizes[a] for a in axes))

    def _const_leaf(self, layout):
        def leaf(i, node):
            if node.op is Op.PARAM:
                return layout.full(self.params[node.attr].to(layout.dtype), node.axes, 0)
            if node.op is Op.SPECTRAL_NORM:
                w = self.params[self.ir.graph[node.args[0]].attr]
                return layout.full(self.sn[str(i)](w).to(layout.dtype), node.axes, 0)
            raise AssertionError(node)

        return leaf

    def frontier_values(self) -> dict[int, torch.Tensor]:
        """The parameter-only values the cell reads (compact shapes; fp32, or fp64 for fp64 weights)."""
        ir = self.ir
        some = next(iter(self.parameters()))
        layout = Layout(ir, compute_dtype(some), some.device)
        env = evaluate(ir, self._frontier_order, {}, self._const_leaf(layout), layout)
        return {i: layout.compact(env[i], ir.graph[i].axes, ()) for i in self._frontier}

    # ---- the recurrence --------------------------------------------------------------------------
    def cell(self, inputs, frontier, state0):
        if self.backend == "reference":
            return reference_cell(self.ir, inputs, frontier, state0)
        if self._cell is None:
            from archdsl.codegen import compile_cell

            self._cell = compile_cell(self.ir, **self.compile_options)
        return self._cell(inputs, frontier, state0)

    def forward(self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None, cu_seqlens=None):
        """x [B, T, dim] -> (y [B, T, dim], final states {name: [B, *axes]}), from ``state`` (or zeros).

        ``cu_seqlens`` [N + 1]: x [1, total, dim] packs N sequences, ``x[:, cu[k]:cu[k+1]]`` the k-th;
        each starts from its own state (``state[name]`` [N, *axes], zeros when absent) and the final
        states are [N, *axes], as if each ran alone (archdsl/packed.py).

        A spec that reads earlier tokens (``shift``, ``conv``) also returns its last ``lookback`` inputs
        as the state ``"x:history"``; given back, the next call continues the sequence exactly (not
        with packed sequences, which start fresh). A spec that reads ``position()`` returns the tokens
        each row has seen as ``"x:position"`` [B] (int64; [N] with packed sequences, whose positions
        restart at each boundary); given back, the positions of the next call go on from it."""
        with recomputing(self.recompute):  # cheap saved values remade in the backward
            return self._forward(x, state, cu_seqlens)

    def _forward(self, x: torch.Tensor, state, cu_seqlens):
        bounds = None
        if cu_seqlens is None:
            check_input(self.ir, self.out.weight, x, state)
        else:
            bounds = check_packed(self.ir, self.out.weight, x, state, cu_seqlens)
        B, T = x.shape[:2]
        state = dict(state) if state else {}
        history = state.pop(HISTORY, None)
        start = state.pop(POSITION, None)  # [B] (or [N]): the tokens seen before this call
        if bounds is not None and history is not None:
            name = self.ir.name
            raise LayerInputError(f"layer '{name}': packed sequences start fresh: no '{HISTORY}' state")
        positions = self._positions(x, start, bounds)
        if bounds is not None and self.lookback:  # each sequence's convolutions see only its own tokens
            pos = [None if positions is None else positions[:, a:b] for a, b in bounds]
            parts = [self.project(x[:, a:b], p) for (a, b), p in zip(bounds, pos)]
            values = {name: torch.cat([p[name] for p in parts], 1) for name in self._inputs}
        elif history is not None and history.shape[1]:  # a continued sequence: its earlier tokens
            n = history.shape[1]
            if positions is not None:  # the earlier tokens' places come before this call's
                positions = torch.cat(
                    [positions[:, :1] - torch.arange(n, 0, -1, device=x.device), positions], 1
                )
            seen = torch.cat([history.to(x.dtype), x], 1)
            values = {k: v[:, n:] for k, v in self.project(seen, positions).items()}
        else:
            values = self.project(x, positions)
        inputs = {name: values[name] for name in self._inputs}
        if bounds is None:
            y, final = self.cell(inputs, self.frontier_values(), state or None)
            if self.lookback:
                seen = x if history is None else torch.cat([history.to(x.dtype), x], 1)
                final[HISTORY] = seen[:, -self.lookback :]
        else:
            y, final = packed_cell(self.cell, inputs, self.frontier_values(), state or None, bounds)
        if self.reads_position:  # the tokens seen: one past the last position of each row (sequence)
            last = positions[:, -1] if bounds is None else positions[0, [b - 1 for _, b in bounds]]
            final[POSITION] = last + 1
        autocast = torch.is_autocast_enabled(y.device.type)
        y = y.reshape(B, T, -1).to(y.dtype if autocast else self.out.weight.dtype)
        return self.out(y), final

    def _positions(self, x: torch.Tensor, start, bounds) -> torch.Tensor | None:
        """Each token's place in its sequence, [B, T] int64 (None when the spec reads no position):
        from ``start`` [B] (the tokens seen before; 0 when None), restarting at each packed sequence."""
        if not self.reads_position:
            return None
        if bounds is not None:
            return packed_positions(bounds, start, x.device)
        steps = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        return steps if start is None else steps + start.to(x.device)[:, None]

    # ---- the public extras: one step, states, names --------------------------------------------
    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor] | None = None):
        """One token: x_t [B, dim] -> (y_t [B, dim], the states after it).

        The same computation as ``forward`` on a sequence of length 1, so a sequence fed token by
        token equals the full forward (in eval mode: in training mode a spectral norm's power
        iteration advances on every call). Compiled cells take the length as a run-time argument: every
        step launches the kernels compiled once for length 1 (Triton specialises a length of 1), never
        one per position. A spec that reads earlier tokens (``shift``, ``conv``) carries its last inputs
        as the state ``"x:history"`` (at most ``self.lookback`` tokens), so its convolutions see them."""
        check_input(self.ir, self.out.weight, x_t, state, steps=False)
        y, final = self.forward(x_t.unsqueeze(1), state)
        return y[:, 0], final

    def init_state(self, batch: int, device=None) -> dict[str, torch.Tensor]:
        """Zero states {name: [batch, *axes]} (fp32), what ``forward`` starts from when given none."""
        device = self.out.weight.device if device is None else device
        return {
            s: torch.zeros(batch, *(self.ir.sizes[a] for a in axes), device=device)
            for s, axes in self.ir.states.items()
        }

    def projection_weight(self, output: str) -> torch.Tensor:
        """The rows of one projection output as a view [*its axes, in] (``q`` -> [h, i, dim])."""
        for key, p in zip(self.proj_keys, self.ir.projections):
            start = 0
            for name, axes in p.outputs:
                size = self.ir.numel(axes)
                if name == output:
                    w = self.proj[key].weight[start : start + size]
                    return w.view(*(self.ir.sizes[a] for a in axes), w.shape[-1])
                start += size
        names = [n for p in self.ir.projections for n, _ in p.outputs]
        raise KeyError(f"'{output}' is not a projection output of '{self.ir.name}' ({', '.join(names)})")

    def _rename_old_keys(self, state_dict, prefix, *args) -> None:
        rename_positional(self.proj_keys, state_dict, prefix)


def _x_gemm(layer: LayerIR) -> tuple[int, ...]:
    """The projections (indices) that run as one GEMM: those of ``x`` without a spectral norm, when
    there are several (none otherwise: a single one runs as it is)."""
    plain = [k for k, p in enumerate(layer.projections) if p.source == "x" and p.spectral_norm is None]
    return tuple(plain) if len(plain) > 1 else ()


@dataclass(frozen=True)
class _FusedConv:
    """A short convolution run by one ``conv1d`` (``archdsl/convolve.py``) at node ``out``: its
    ``bias`` (a per-layer value added to it, or None) inside the ``conv1d`` and a ``silu`` of the
    result (the node ``x * sigmoid(x)``, or None) by one call of torch's; ``order``: the nodes it
    needs first."""

    conv: Conv
    order: list
    out: int
    bias: int | None
    silu: int | None


def _fused_convolutions(layer: LayerIR):
    """({sequence value: [_FusedConv]}, {sequence value: its other nodes}): the short convolutions
    under each sequence value, and the evaluation order of the rest without the nodes they replace."""
    g = layer.graph
    users = Counter(a for n in g.nodes for a in n.args)

    def time_free(i: int) -> bool:  # a per-layer value: no input, state or shift below it
        return not any(g[a].op in (Op.INPUT, Op.STATE, Op.SHIFT) for a in g.ancestors([i]))

    def only_user(i: int) -> tuple[int, Node] | None:
        found = [(j, n) for j, n in enumerate(g.nodes) if i in n.args]
        return found[0] if users[i] == 1 and len(found) == 1 else None

    convs, orders = {}, {}
    for name, node in layer.sequence.items():
        needed = g.ancestors([node])
        fused = []
        for c in find_convs(g, [node], time_free):
            out, bias, silu = c.out, None, None
            user = only_user(out)
            if user and user[1].op is Op.ADD and user[0] in needed:
                other = [a for a in user[1].args if a != out]
                if len(other) == 1 and time_free(other[0]) and set(g[other[0]].axes) <= set(g[out].axes):
                    out, bias = user[0], other[0]
            silu = _silu_of(g, out, users)
            if silu is not None and silu[0] in needed:
                silu = silu[0]
            else:
                silu = None
            before = g.ancestors([c.signal, c.weight, *([bias] if bias is not None else [])])
            skip = {*c.inner, *([c.signal] if g[c.signal].op is Op.INPUT else [])}  # read as it is
            fused.append(_FusedConv(c, [i for i in sorted(before) if i not in skip], out, bias, silu))
        convs[name] = fused
        done = {c.out if c.silu is None else c.silu for c in fused}  # computed by the convolutions
        orders[name] = sorted(g.ancestors([node], stop=done) - done)
    return convs, orders


def _silu_of(g, x: int, users) -> tuple[int, int] | None:
    """(the node ``x * sigmoid(x)``, the sigmoid) when they are the only readers of ``x``, else None."""
    found = [(j, n) for j, n in enumerate(g.nodes) if x in n.args]
    sig = [j for j, n in found if n.op is Op.SIGMOID]
    mul = [j for j, n in found if n.op is Op.MUL and set(n.args) == {x, *sig} and len(n.args) == 2]
    if len(sig) != 1 or len(mul) != 1 or users[x] != 2 or users[sig[0]] != 1 or len(found) != 2:
        return None
    return mul[0], sig[0]
