"""The chunked strategy at run time: a cell in the class of ``codegen/linear.py`` (linear in the
state: diagonal decay, a rank-one correction and a rank-one write, read out by a contraction) on
tensor cores.

Per call, the linear form's coefficients (log-decays, ``k``, ``v``, ``q`` and the correction's
``a``, ``b``) are evaluated in parallel over (batch, time), reshaped to ``[B, T, heads, …]`` blocks
and handed to the chunked op (``codegen/run/ops.py``: the Triton kernels of
``codegen/run/chunked_kernels.py`` and ``chunked_backward.py``); ``g ⊙ o + p`` and the spec's
readout parts are evaluated after it. On a GPU (or the interpreter) the coefficients and everything
after the op (``g ⊙ o + p`` and the readout parts, one graph: ``_epilogue``) run as two generated
per-token kernels, forward and backward (``codegen/hoist.py``'s ``TokenPart``, emitted by
``emit_parts_module``), as the loop strategy runs its hoisted part; elsewhere, and for a coefficient
that is not computed per token, the reference's rules in PyTorch.

A cell with max-plus states (``codegen/maxplus.py``) runs their scans first
(``codegen/run/maxplus_scan.py``), in PyTorch, and hands each such state's old and new values to the
rest as per-token inputs; a cell with several linear states runs one op per state, and its readout
part reads every op's output.
"""

from __future__ import annotations

import dataclasses
import functools
from types import SimpleNamespace

import torch
from archdsl.codegen.classify import ChunkedForm, classify
from archdsl.codegen.emit.module import emit_parts_module
from archdsl.codegen.emit.names import module_name
from archdsl.codegen.hoist import TokenPart
from archdsl.codegen.linear import LinearForm
from archdsl.codegen.plan import make_token_plan
from archdsl.codegen.run.chunked_common import LAUNCH, interpreted, o_dtype, products, store_dtype
from archdsl.codegen.run.chunked_kernels import kernel_path
from archdsl.codegen.run.maxplus_scan import max_plus_scan
from archdsl.codegen.run.ops import chunked_op
from archdsl.codegen.run.runtime import ParallelPart, load_module

from archdsl.autodiff import extract_cell
from archdsl.errors import ArchdslError
from archdsl.ir import Graph, LayerIR, Node, Op
from archdsl.reference import Layout, apply, compute_dtype


def chunked_linear(lw, q, k, v, ab, h0, chunk: int, dtype: torch.dtype, split=False, half=False):
    """The chunked recurrence on the coefficients as they are (their own float types, any strides:
    no copy); ``dtype``: the layer's, which picks the products' type (``chunked_common.products``:
    exact fp32 for fp32 layers, bf16/fp16 operands with fp32 accumulation for bf16/fp16 layers, TF32
    for a delta rule's) and o's (``chunked_common.o_dtype``: fp32, or a 16-bit layer's own where the
    decay is one per key channel) and the intermediates' the kernels store (``store_dtype``);
    ``split``: ``LinearForm.split_scores``; ``half``: the ``products="half"`` option (every product,
    o and the stored intermediates in a 16-bit layer's own type)."""
    dot, o_type = products(dtype, bool(ab), half), o_dtype(dtype, lw.dim() == 3, half)
    op = chunked_op(chunk, dot, o_type, store_dtype(dtype), split, half)
    out = op([lw, q, k, v, *ab], h0.float().contiguous())
    return out[0], out[1]  # after them the op's kept tensors (for its backward)


#: the ``products`` option's values (``archdsl compile --products``), as ``archdsl compile`` prints them
PRODUCTS = {
    "tf32": "a 16-bit layer's delta rule and every backward multiply fp32 operands as TF32, the rest "
    "in the layer's type (fp32 layers: exact)",
    "half": "every product in a 16-bit layer's own type, o and the stored intermediates too, as fla "
    "and mamba_ssm (fp32 layers: exact)",
}


#: the widest padded key axis whose exact fp32 products fit a GPU: at 256 the output kernel alone
#: needs 278528 B of shared memory (compiled for sm_90a, any pipeline depth), more than an H100 or
#: H200 has (232448 B); retnet at --params 100M (key 197) stopped there on an H200 (round-12/)
IEEE_KEY_MAX = 128


def fits_on_gpu(layer: str, key: str, size: int, dot: str) -> None:
    """ArchdslError (no Triton traceback) where the products ``dot`` cannot run at this key size."""
    padded = max(16, 1 << (size - 1).bit_length())
    if dot == "ieee" and padded > IEEE_KEY_MAX:
        raise ArchdslError(
            f"{layer}: the chunked strategy multiplies an fp32 layer's values exactly, and at its key "
            f"axis {key} = {size} ({padded} padded; at most {IEEE_KEY_MAX}) those products need more "
            "shared memory than a GPU has: run the layer under bf16 or fp16 autocast, or choose "
            "--strategy loop"
        )


def layer_dtype(inputs) -> torch.dtype:
    """The layer's data type, which picks the chunked op's products: a 16-bit type where any per-token
    input has one (the projections' outputs under autocast or in a 16-bit model), else the first
    input's. A sequence value (retnet's rotated q and k, made with ``position()``) is computed in fp32
    whatever the layer's type: read first, it had made a bf16 retnet multiply in exact fp32 (on an
    H200, 64 ms a forward+backward at RetNet_100m against fla's 2.6)."""
    inputs = list(inputs)
    half = [t.dtype for t in inputs if t.dtype in (torch.bfloat16, torch.float16)]
    return half[0] if half else inputs[0].dtype


def _evaluate(graph: Graph, roots, leaves: dict, layout: Layout, env: dict | None = None) -> dict:
    """The nodes under ``roots`` on full-layout tensors in ``layout.dtype``; ``leaves``: (op, name) ->
    tensor (of any type: converted where read)."""
    env = {} if env is None else env
    for i in sorted(graph.ancestors(roots, stop=env)):  # nothing below a value already known
        if i in env:
            continue
        n = graph[i]
        if n.op is Op.CONST:
            env[i] = torch.full([1] * len(layout.axes), n.attr, dtype=layout.dtype, device=layout.device)
        elif n.op in (Op.INPUT, Op.PARAM):
            env[i] = leaves[(n.op, n.attr)].to(layout.dtype)
        else:
            env[i] = apply(n, [env[a] for a in n.args], layout)
    return env


def _correction(form: LinearForm) -> tuple[int, ...]:
    """The nodes of the op's rank-one correction ``ab`` (``chunked_common.correction``): (a, b); (b,)
    where it shares the write's key (``LAUNCH["joint"]``), (σ,) where its read vector is σ k too
    (``LAUNCH["tie"]``); () without one."""
    if form.a is None:
        return ()
    if not (form.joint and LAUNCH["joint"]):
        return (form.a, form.b)
    return (form.tie,) if form.tie is not None and LAUNCH["tie"] else (form.b,)


def _roles(form: LinearForm, suffix: str = "") -> dict[str, int]:
    roles = {"lw": form.log_w, "q": form.q, "k": form.k, "v": form.v}
    low = _correction(form)
    roles |= dict(zip(("a", "b")[2 - len(low) :], low))
    return {r + suffix: i for r, i in roles.items()}


def _coefficients(fc: ChunkedForm) -> TokenPart | None:
    """The coefficients that are computed (not a per-token input as it is) as one stateless part,
    each output named after its role (and its state, with several), a node that several forms share
    computed once; None when there is none or one does not vary per token."""
    c, forms = fc.cell, fc.forms
    g = forms[0].graph  # shared by the forms
    computed: dict[str, int] = {}
    for f in forms:
        for role, i in _roles(f, f"_{f.state}" if len(forms) > 1 else "").items():
            if g[i].op is not Op.INPUT and i not in computed.values():
                computed[role] = i
    if not computed or any(not any(g[j].op is Op.INPUT for j in g.ancestors([i])) for i in computed.values()):
        return None
    taken = {*c.inputs, *c.consts, *c.names.values()}
    outputs = {}
    for role, i in computed.items():
        name = f"coef_{role}"
        while name in taken:
            name += "_"
        outputs[name] = i
    return TokenPart.below(c, g, outputs, {**c.names, **{i: n for n, i in outputs.items()}})


def _epilogue(fc: ChunkedForm) -> TokenPart | None:
    """Everything after the chunked ops as one stateless part, ``y`` from the ops' outputs (the inputs
    ``o:``): each form's ``g ⊙ o + p`` and then each readout part, in one graph (each part's inputs
    from the ops or the part before replaced by those values); None when there is nothing to compute
    (``y = o``)."""
    c, forms, readouts = fc.cell, fc.forms, fc.readouts
    if len(forms) == 1 and forms[0].out == forms[0].o_leaf and not readouts:
        return None
    fg = forms[0].graph
    g = Graph()
    remap: dict[int, int] = {}
    for i in sorted(fg.ancestors([f.out for f in forms])):
        n = fg[i]
        remap[i] = g.add(Node(n.op, tuple(remap[a] for a in n.args), n.axes, n.attr))
    names = {remap[i]: n for i, n in c.names.items() if i in remap}
    outs = {f.state: remap[f.out] for f in forms}
    out = outs[forms[0].state]
    for part, wiring in readouts:
        here: dict[int, int] = {}
        for i, n in enumerate(part.graph.nodes):
            if n.op is Op.INPUT and n.attr in wiring:
                here[i] = out if wiring[n.attr] is None else outs[wiring[n.attr]]
            else:
                here[i] = g.add(Node(n.op, tuple(here[a] for a in n.args), n.axes, n.attr))
        names.update({here[i]: n for i, n in part.names.items() if here[i] not in names})
        out = here[part.outputs["y"]]
    leaves = [g[i] for i in g.ancestors([out]) if g[i].op in (Op.INPUT, Op.PARAM)]
    inputs = {n.attr: n.axes for n in leaves if n.op is Op.INPUT}
    consts = {n.attr: n.axes for n in leaves if n.op is Op.PARAM}
    sources = {**c.const_source, **{k: v for part, _ in readouts for k, v in part.const_source.items()}}
    return TokenPart.of(dataclasses.replace(c, const_source=sources), g, inputs, consts, {"y": out}, names)


def _narrow(fc: ChunkedForm, coefficients: TokenPart | None, half: bool = False) -> dict[str, frozenset]:
    """The outputs of the parts around the ops that a 16-bit layer writes in its own type
    (``ParallelPart.dtypes``; ``LAUNCH["narrow"]``): the layer's output ``y`` (rounded there rather
    than by a copy after), and the coefficients of a form without a rank-one correction but its
    log-decays, which the kernels sum and exponentiate: its forward products round their operands to
    the 16-bit type already (``chunked_common.products``), so the kernels read half the bytes for
    the same products. A delta rule's products are TF32 and its coefficients stay fp32: rounded to
    bf16 they doubled e88's gradients' distance to the reference in the kernel harness (``dx``
    7.4e-3 to 1.8e-2, T 33, chunks of 16, CPU interpreter) and took gdn's ``dt_bias`` past 2e-2;
    with ``half`` (``products="half"``: 16-bit products there too) they are narrowed as well."""
    if not LAUNCH["narrow"]:
        return {}
    write = {i for f in fc.forms if f.a is None or half for i in _roles(f).values()}
    kept = {f.log_w for f in fc.forms}
    if not half:  # a delta rule's coefficients stay fp32 for its TF32 products
        kept |= {i for f in fc.forms if f.a is not None for i in _roles(f).values()}
    chosen = write - kept  # a node that a delta rule or a decay also reads stays fp32
    outs = coefficients.outputs.items() if coefficients else ()
    return {"token": frozenset(n for n, i in outs if i in chosen), "readout": frozenset({"y"})}


def _parallel_parts(
    layer: LayerIR, coefficients: TokenPart | None, epilogue: TokenPart | None, narrow: dict
) -> dict:
    """{kind: ParallelPart} of the coefficients (``token``) and of everything after the chunked op
    (``readout``) from one generated module; {} when there is neither. ``narrow``: ``_narrow``'s."""
    chosen = {"token": coefficients, "readout": epilogue}
    parts = [(k, p, make_token_plan(p.axes, p.sizes, p.graph)) for k, p in chosen.items() if p is not None]
    if not parts:
        return {}
    stem = module_name(layer.name)
    module, digest, _ = load_module(
        emit_parts_module(layer, parts), stem + "_chunked", f"{layer.name} (chunked strategy)"
    )
    return {k: ParallelPart(k, p, pp, module, digest, stem, narrow.get(k, frozenset())) for k, p, pp in parts}


class ChunkedCell:
    """Callable like every compiled cell: ``(inputs, frontier, state0) -> (y, final states)``."""

    strategy = "chunked"

    def __init__(self, layer: LayerIR, chunked: ChunkedForm, chunk: int, half: bool = False):
        self.chunked, self.forms, self.readouts, self.chunk = chunked, chunked.forms, chunked.readouts, chunk
        self.half = half  # the ``products="half"`` option
        self.cell = c = chunked.cell
        self.hash = f"{layer.fingerprint()}_c{chunk}" + ("_half" if half else "")
        self.path = kernel_path()
        self.description = chunked.describe()
        self.sizes = c.sizes
        self.shape_info = SimpleNamespace(axes=c.axes, sizes=c.sizes)  # what Layout reads of a layer
        self.coefficients = _coefficients(chunked)
        self.epilogue = _epilogue(chunked)
        self.layer = layer

    @functools.cached_property
    def kernels(self) -> dict:
        """The per-token parts' generated kernels (written and imported on first use)."""
        narrow = _narrow(self.chunked, self.coefficients, self.half)
        return _parallel_parts(self.layer, self.coefficients, self.epilogue, narrow)

    def describe(self) -> list[tuple[str, str]]:
        """(label, text) lines for ``archdsl compile``."""
        cut = ", ".join(name for _, wiring in self.readouts for name in wiring)
        return [
            ("form", self.description.removeprefix("chunked: ")),
            (
                "chunk",
                f"{self.chunk} steps (intra-chunk products by tl.dot, the state between chunks in fp32)",
            ),
            (
                "around",
                "per-token coefficients before, g ⊙ o + p and the readout after: generated kernels "
                "on a GPU, PyTorch elsewhere" + (f" (cut at {cut})" if cut else ""),
            ),
            ("products", PRODUCTS["half" if self.half else "tf32"]),
        ]

    def _block(self, t: torch.Tensor, axes, merge: int, BT) -> torch.Tensor:
        """Full layout [B, T, *all axes] (or broadcastable to it) -> [B, T, prod(first ``merge`` axes),
        *sizes of the rest]."""
        c = self.cell
        shape = [*BT, *(c.sizes[a] if a in axes else 1 for a in c.axes)]
        t = t.expand(shape)
        rest = [d for d, a in enumerate(c.axes) if a not in axes]
        t = t.permute(0, 1, *(2 + c.axes.index(a) for a in axes), *(2 + d for d in rest))
        sizes = [c.sizes[a] for a in axes]
        n_head = 1
        for s in sizes[:merge]:
            n_head *= s
        return t.reshape(*shape[:2], n_head, *sizes[merge:])

    def _leaves(self, cell, inputs, frontier, layout) -> dict:
        leaves = {(Op.INPUT, n): layout.full(inputs[n], ax, 2) for n, ax in cell.inputs.items()}
        for name, ax in cell.consts.items():
            leaves[(Op.PARAM, name)] = layout.full(frontier[cell.const_source[name]].to(layout.dtype), ax, 0)
        return leaves

    def _scans(self, inputs, frontier, state0, layout, B, T) -> tuple[dict, dict]:
        """The max-plus states' old and new values as inputs (added to ``inputs``) and their final
        values, each scan's ``a`` and ``b`` evaluated by the reference's rules (autograd)."""
        inputs, finals = dict(inputs), {}
        for m in self.chunked.scans:
            axes = m.cell.states[m.state]
            env = _evaluate(m.cell.graph, [m.a, m.b], self._leaves(m.cell, inputs, frontier, layout), layout)
            s0 = (state0 or {}).get(m.state)
            if s0 is None:
                s0 = torch.zeros(B, *(self.sizes[a] for a in axes), device=layout.device)
            s0 = layout.full(s0.to(layout.dtype), axes, 1)
            a, b = (env[i].expand(B, T, *s0.shape[1:]) for i in (m.a, m.b))
            s = max_plus_scan(a, b, s0)  # [B, T, *the state's axes in the full layout]
            prev = torch.cat([s0.unsqueeze(1), s[:, :-1]], 1)
            inputs[m.prev] = layout.compact(prev, axes, (B, T))
            inputs[m.new] = layout.compact(s, axes, (B, T))
            finals[m.state] = layout.compact(s[:, -1], axes, (B,)).float()
        return inputs, finals

    def __call__(self, inputs, frontier, state0=None):
        fc, c = self.chunked, self.cell
        x0 = next(iter(inputs.values()))
        B, T = x0.shape[:2]
        dtype = layer_dtype(inputs.values())
        layout = Layout(self.shape_info, compute_dtype(x0), x0.device)
        inputs, finals = self._scans(inputs, frontier, state0, layout, B, T)
        leaves = self._leaves(c, inputs, frontier, layout)
        roots = [i for f in self.forms for i in _roles(f).values()]
        fused = x0.is_cuda or interpreted()
        env = {}
        if fused and "token" in self.kernels:
            part = self.kernels["token"]
            outs = part(inputs, frontier)
            for i, t in zip(self.coefficients.outputs.values(), outs):
                env[i] = layout.full(t, fc.forms[0].graph[i].axes, 2)
        # a coefficient that is an input as it is reaches the kernels in its own type (no copy)
        g = fc.forms[0].graph
        raw = {i: leaves[(Op.INPUT, g[i].attr)] for i in roots if g[i].op is Op.INPUT}
        env = _evaluate(g, roots, leaves, layout, {**env, **raw})
        outs = {}
        for f in self.forms:
            outs[g[f.o_leaf].attr], finals[f.state] = self._run(f, env, state0, x0.device, dtype, B, T)
        if fused and "readout" in self.kernels:  # g ⊙ o + p and the readout: one generated kernel
            y = self.kernels["readout"]({**inputs, **outs}, frontier)[0]
        else:
            y = self._around(outs, env, raw, inputs, frontier, leaves, layout)
        return y.to(dtype), finals

    def _run(self, f: LinearForm, env, state0, device, dtype, B, T):
        """One linear state's chunked op: (its output o [B, T, heads + values], its final state)."""
        c = self.cell
        nh = len(f.heads)
        hk = (*f.heads, f.key)
        lw = self._block(env[f.log_w], f.heads if f.scalar_decay else hk, nh, (B, T))
        vec = [self._block(env[i], hk, nh, (B, T)) for i in (f.q, f.k)]
        v = self._block(env[f.v], (*f.heads, *f.values), nh, (B, T)).reshape(B, T, vec[0].shape[2], -1)
        ab = [self._block(env[i], f.heads if i == f.tie else hk, nh, (B, T)) for i in _correction(f)]
        h0 = self._state0(f, state0, B, device)
        if device.type == "cuda":
            fits_on_gpu(self.layer.name, f.key, c.sizes[f.key], products(dtype, bool(ab), self.half))
        o, hT = chunked_linear(lw, vec[0], vec[1], v, ab, h0, self.chunk, dtype, f.split_scores, self.half)
        o = self._unblock(f, o.reshape(B, T, *(c.sizes[a] for a in f.heads + f.values)))
        return o, self._final(f, hT, B)

    def _around(self, outs, env, raw, inputs, frontier, leaves, layout):
        """``g ⊙ o + p`` and the readout parts by the reference's rules (no generated kernels)."""
        g = self.forms[0].graph
        x = next(iter(outs.values()))
        B, T = x.shape[:2]
        env = {i: t for i, t in env.items() if i not in raw}
        for f in self.forms:
            leaves[(Op.INPUT, g[f.o_leaf].attr)] = layout.full(outs[g[f.o_leaf].attr], g[f.o_leaf].axes, 2)
        env = _evaluate(g, [f.out for f in self.forms], leaves, layout, env)
        values = {f.state: layout.compact(env[f.out], f.cell.output_axes, (B, T)) for f in self.forms}
        y = values[self.forms[0].state]
        for part, wiring in self.readouts:
            y = self._readout(part, wiring, values, y, inputs, frontier, layout)
        return y

    def _unblock(self, f: LinearForm, t: torch.Tensor) -> torch.Tensor:
        """[B, T, *sizes of heads + values] -> [B, T, *the same sizes in the cell's axis order]."""
        ax = (*f.heads, *f.values)
        canon = [a for a in self.cell.axes if a in ax]
        return t.permute(0, 1, *(2 + ax.index(a) for a in canon))

    def _state_order(self, f: LinearForm):
        axes = self.cell.states[f.state]
        return [axes.index(a) for a in (*f.heads, f.key, *f.values)]

    def _state0(self, f: LinearForm, state0, B, dev):
        c = self.cell
        axes = c.states[f.state]
        s0 = (state0 or {}).get(f.state)
        if s0 is None:
            s0 = torch.zeros(B, *(c.sizes[a] for a in axes), device=dev)
        s0 = s0.float().permute(0, *(1 + d for d in self._state_order(f)))
        n_h = 1
        for a in f.heads:
            n_h *= c.sizes[a]
        return s0.reshape(B, n_h, c.sizes[f.key], -1)

    def _final(self, f: LinearForm, hT: torch.Tensor, B: int) -> torch.Tensor:
        c = self.cell
        order = self._state_order(f)
        t = hT.reshape(B, *(c.sizes[a] for a in (*f.heads, f.key, *f.values)))
        inverse = [order.index(d) for d in range(len(order))]
        return t.permute(0, *(1 + d for d in inverse)).contiguous()

    def _readout(self, part: TokenPart, wiring: dict, values: dict, y, inputs, frontier, layout):
        B, T = y.shape[:2]
        leaves = {}
        for n, ax in part.inputs.items():
            if n in wiring:
                t = y if wiring[n] is None else values[wiring[n]]
            else:
                t = inputs[n].to(layout.dtype)
            leaves[(Op.INPUT, n)] = layout.full(t, ax, 2)
        for name, ax in part.consts.items():
            leaves[(Op.PARAM, name)] = layout.full(frontier[part.const_source[name]].to(layout.dtype), ax, 0)
        node = part.outputs["y"]
        env = _evaluate(part.graph, [node], leaves, layout)
        return layout.compact(env[node], part.graph[node].axes, (B, T))


def build_chunked(layer: LayerIR, chunk: int = 64) -> ChunkedCell:
    """The layer's cell on the chunked strategy; ValueError with the reason when it does not apply."""
    got = classify(extract_cell(layer))
    if isinstance(got, str):
        raise ValueError(f"{layer.name}: the chunked strategy does not apply: {got}")
    return ChunkedCell(layer, got, chunk)
