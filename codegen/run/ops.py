"""The ``torch.library`` custom ops through which PyTorch and ``torch.compile`` call compiled cells.

Every strategy's op is registered by one helper, ``register``: a forward op ``archdsl::<name>``, its
backward as a second op ``archdsl::<name>_bwd`` (so that tracing the backward never launches a
kernel; ``torch.compile`` keeps each as one node), both with fake implementations (output shapes
only), and the backward op as the forward's autograd formula. An op is registered once per name: the
name covers the generated source and every launch setting, so cells that agree on it compute the
same thing and share it.

- ``loop_op``: the fused sequential loop, ``(xs, cs, h0) -> [y, *final states, *checkpoints]``;
- ``part_op``: a stateless per-token part around the loop, ``(xs, cs) -> outputs``;
- ``persistent_op``: ``(xs, cs, ws, h0) -> [y, *finals, *state history, *operand history, *mv]``;
- ``chunked_op``: ``([lw, q, k, v, *ab], h0) -> [o, final state, *kept]`` (``kept``: what the
  backward reads of the forward's kernels, ``chunked_kernels.chunked_forward_kept``, or nothing).

An eager call (plain tensors, nothing tracing) runs the same functions through a plain
``torch.autograd.Function`` instead (``Op``): a custom op's first call imports TorchDynamo, seconds
of a process's first forward that only ``torch.compile`` needs. The chunked strategy's kernel modules
(about 80 ``@triton.jit`` functions) are imported by ``chunked_op`` when a chunked cell first runs,
not with this module: a spec on another strategy never loads them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from archdsl.codegen.run.tritonkey import install
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

install()  # Triton's compiler hash read from archdsl's cache, not recomputed per process

_OPS: dict[str, object] = {}


def register(
    name: str,
    forward: Callable,
    fake: Callable,
    backward: Callable,
    backward_fake: Callable,
    save: Callable,
    grads: Callable,
):
    """The op ``name`` (``archdsl::…``), registered on its first request.

    ``forward`` and ``backward`` are typed functions (their annotations are the ops' schemas), ``fake``
    and ``backward_fake`` the same functions on shapes only; ``save(ctx, inputs, output)`` keeps what
    the backward needs; ``grads(ctx, grads, bwd)`` returns the inputs' gradients, calling the backward
    op ``bwd``."""
    if name in _OPS:
        return _OPS[name]
    op = torch.library.custom_op(name, forward, mutates_args=())
    op.register_fake(fake)
    bwd = torch.library.custom_op(name + "_bwd", backward, mutates_args=())
    bwd.register_fake(backward_fake)

    def autograd(ctx, out_grads):
        return grads(ctx, out_grads, bwd)

    op.register_autograd(autograd, setup_context=save)
    _OPS[name] = Op(op, forward, backward, save, grads)
    return _OPS[name]


class Op:
    """A registered op, callable like it: traced calls (``torch.compile``, fake tensors, any
    dispatch mode) go to the custom op, eager calls to ``_Eager`` with the same functions."""

    def __init__(self, op, forward: Callable, backward: Callable, save: Callable, grads: Callable):
        self.custom, self.forward, self.backward, self.save, self.grads = op, forward, backward, save, grads

    def __call__(self, *args):
        flat = [t for a in args for t in (a if isinstance(a, list) else [a])]
        plain = all(type(t) in (torch.Tensor, torch.nn.Parameter) for t in flat)
        if not plain or torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
            return self.custom(*args)
        if not (torch.is_grad_enabled() and any(t.requires_grad for t in flat)):
            with torch.no_grad():
                return self.forward(*args)
        sizes = [len(a) if isinstance(a, list) else None for a in args]
        return list(_Eager.apply(self, sizes, *flat))


def _unflatten(flat: list, sizes: list) -> list:
    """The op's arguments again: a list where ``sizes`` has its length, a tensor where None."""
    out, at = [], 0
    for n in sizes:
        out.append(flat[at] if n is None else list(flat[at : at + n]))
        at += 1 if n is None else n
    return out


class _Eager(torch.autograd.Function):
    """An ``Op`` outside tracing: its forward, ``save`` and ``grads`` as the custom op's autograd
    formula calls them (unused outputs' gradients materialised as zeros, as there)."""

    @staticmethod
    def forward(ctx, op: Op, sizes: list, *flat):
        args = _unflatten(list(flat), sizes)
        out = op.forward(*args)
        op.save(ctx, tuple(args), out)
        ctx.op = op
        return tuple(out)

    @staticmethod
    def backward(ctx, *out_grads):
        grads = ctx.op.grads(ctx, list(out_grads), ctx.op.backward)
        flat = [g for group in grads for g in (group if isinstance(group, (list, tuple)) else [group])]
        return (None, None, *flat)


def _no_zeros(ctx, kept) -> None:
    """The outputs the backward only reads (checkpoints, histories) get no gradient, and autograd
    passes None for an unused output's gradient where it would fill zeros: at a checkpoint stride of
    1 those zeros were each history's size (E88_h8n64 forward+backward 2.84 -> 2.36 ms of wall time at
    the same plan, peak 4819 -> 2703 MiB; round 24 calls 1 and 3, H200). Each ``grads`` makes the zeros
    it needs for ``dy`` and the final states."""
    ctx.mark_non_differentiable(*kept)
    ctx.set_materialize_grads(False)


def _grads_like(*groups) -> list[torch.Tensor]:
    """Empty gradients shaped like each tensor of ``groups`` (the last group's in fp32)."""
    *rest, last = groups
    return [
        *(torch.empty_like(x) for group in rest for x in group),
        *(torch.empty_like(d, dtype=torch.float32) for d in last),
    ]


def loop_op(cc):
    """``archdsl::cell_<hash>_<chunk>_<warps>_<tiles>`` of a ``runtime.CompiledCell``."""
    name = f"archdsl::cell_{cc.hash}_{cc.plan.chunk}_{cc.plan.num_warps}_{cc.plan.n_tiles}"
    n_s, cell = len(cc.state_names), cc.cell
    states = [tuple(cell.sizes[a] for a in cell.states[s]) for s in cc.state_names]

    def forward(xs: list[torch.Tensor], cs: list[torch.Tensor], h0: list[torch.Tensor]) -> list[torch.Tensor]:
        y, ht, ck = cc.forward(xs, cs, h0)
        return [y, *ht, *ck]

    def fake(xs, cs, h0):
        B, T = xs[0].shape[:2]
        y = xs[0].new_empty(B, T, *(cell.sizes[a] for a in cell.output_axes))
        ht = [xs[0].new_empty(B, *shape, dtype=torch.float32) for shape in states]
        ck = [xs[0].new_empty(shape, dtype=torch.float32) for shape in cc.saved_shapes(B, T)]
        return [y, *ht, *ck]

    def backward(
        xs: list[torch.Tensor],
        cs: list[torch.Tensor],
        ck: list[torch.Tensor],
        dy: torch.Tensor,
        dht: list[torch.Tensor],
    ) -> list[torch.Tensor]:
        dxs, dcs, dh0 = cc.backward(xs, cs, ck, dy, dht)
        return [*dxs, *dcs, *dh0]

    def save(ctx, inputs, output):
        xs, cs, _ = inputs
        ctx.n = (len(xs), len(cs))
        _no_zeros(ctx, output[1 + n_s :])
        ctx.save_for_backward(*xs, *cs, *output[1 + n_s :])

    def grads(ctx, out_grads, bwd):
        n_x, n_c = ctx.n
        saved = ctx.saved_tensors
        xs, cs, ck = saved[:n_x], saved[n_x : n_x + n_c], saved[n_x + n_c :]
        dy, dht = out_grads[0], list(out_grads[1 : 1 + n_s])
        if dy is None:
            dy = xs[0].new_zeros(*xs[0].shape[:2], *(cell.sizes[a] for a in cell.output_axes))
        B = xs[0].shape[0]
        dht = [
            d if d is not None else xs[0].new_zeros(B, *shape, dtype=torch.float32)
            for d, shape in zip(dht, states)
        ]
        out = bwd(list(xs), list(cs), list(ck), dy, dht)
        return out[:n_x], out[n_x : n_x + n_c], out[n_x + n_c :]

    def backward_fake(xs, cs, ck, dy, dht):
        return _grads_like(xs, cs, dht)

    return register(name, forward, fake, backward, backward_fake, save, grads)


def part_op(pp):
    """``archdsl::<kind>_<hash>_<chunk>_<warps>`` of a ``runtime.ParallelPart``."""
    narrow = "".join(f"_{i}" for i, o in enumerate(pp.part.outputs) if o in pp.narrow)
    name = f"archdsl::{pp.kind}_{pp.hash}_{pp.plan.chunk}_{pp.plan.num_warps}{narrow}"

    def forward(xs: list[torch.Tensor], cs: list[torch.Tensor]) -> list[torch.Tensor]:
        return pp.forward(xs, cs)

    def fake(xs, cs):
        return [xs[0].new_empty(s, dtype=d) for s, d in zip(pp.shapes(xs[0]), pp.dtypes(xs))]

    def backward(
        xs: list[torch.Tensor], cs: list[torch.Tensor], douts: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        dxs, dcs = pp.backward(xs, cs, douts)
        return [*dxs, *dcs]

    def backward_fake(xs, cs, douts):
        return [*(torch.empty_like(x) for x in xs), *(torch.empty_like(c) for c in cs)]

    def save(ctx, inputs, output):
        xs, cs = inputs
        ctx.n = len(xs)
        ctx.save_for_backward(*xs, *cs)

    def grads(ctx, out_grads, bwd):
        saved = ctx.saved_tensors
        xs, cs = list(saved[: ctx.n]), list(saved[ctx.n :])
        douts = [
            g if g is not None else xs[0].new_zeros(s, dtype=d)
            for g, s, d in zip(out_grads, pp.shapes(xs[0]), pp.dtypes(xs))
        ]
        out = bwd(xs, cs, douts)
        return out[: ctx.n], out[ctx.n :]

    return register(name, forward, fake, backward, backward_fake, save, grads)


def persistent_op(pc):
    """``archdsl::pcell_<key>`` of a ``persistent.PersistentCell`` (the key covers its source hash
    and launch settings)."""
    cell = pc.cell
    n_s, n_v, n_m = len(pc.state_names), len(pc.operands), len(pc.matvecs)
    D = cell.sizes[pc.lay.rows]

    def forward(
        xs: list[torch.Tensor], cs: list[torch.Tensor], ws: list[torch.Tensor], h0: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        y, finals, hs, hv, mv = pc.forward(xs, cs, ws, h0)
        return [y, *finals, *hs, *hv, *mv]

    def fake(xs, cs, ws, h0):
        B, T = xs[0].shape[:2]
        x = xs[0]
        y = x.new_empty(B, T, *(cell.sizes[a] for a in cell.output_axes))
        finals = [h.new_empty(h.shape) for h in h0]
        hs = [h.new_empty(B, T + 1, *h.shape[1:]) for h in h0]
        hv = [x.new_empty(T + 1, B, D) for _ in range(n_v)]
        mv = [x.new_empty(B, T, D, dtype=torch.float32) for _ in range(n_m)]
        return [y, *finals, *hs, *hv, *mv]

    def backward(
        xs: list[torch.Tensor],
        cs: list[torch.Tensor],
        ws: list[torch.Tensor],
        hs: list[torch.Tensor],
        hv: list[torch.Tensor],
        mv: list[torch.Tensor],
        dy: torch.Tensor,
        dht: list[torch.Tensor],
    ) -> list[torch.Tensor]:
        dxs, dcs, dws, dh0 = pc.backward(xs, cs, ws, hs, hv, mv, dy, dht)
        return [*dxs, *dcs, *dws, *dh0]

    def save(ctx, inputs, output):
        xs, cs, ws, _ = inputs
        ctx.n = (len(xs), len(cs), len(ws))
        _no_zeros(ctx, output[1 + n_s :])
        ctx.save_for_backward(*xs, *cs, *ws, *output[1 + n_s :])

    def grads(ctx, out_grads, bwd):
        n_x, n_c, n_w = ctx.n
        saved = list(ctx.saved_tensors)
        xs, cs, ws = saved[:n_x], saved[n_x : n_x + n_c], saved[n_x + n_c : n_x + n_c + n_w]
        rest = saved[n_x + n_c + n_w :]
        hs, hv, mv = rest[:n_s], rest[n_s : n_s + n_v], rest[n_s + n_v :]
        dy, dht = out_grads[0], list(out_grads[1 : 1 + n_s])
        if dy is None:
            dy = xs[0].new_zeros(*xs[0].shape[:2], *(cell.sizes[a] for a in cell.output_axes))
        dht = [d if d is not None else torch.zeros_like(h[:, 0]) for d, h in zip(dht, hs)]
        out = bwd(xs, cs, ws, hs, hv, mv, dy, dht)
        return out[:n_x], out[n_x : n_x + n_c], out[n_x + n_c : n_x + n_c + n_w], out[n_x + n_c + n_w :]

    def backward_fake(xs, cs, ws, hs, hv, mv, dy, dht):
        return _grads_like(xs, cs, ws, dht)

    return register(f"archdsl::pcell_{pc.key}", forward, fake, backward, backward_fake, save, grads)


def chunked_op(
    chunk: int,
    dot: str,
    o_type: torch.dtype = torch.float32,
    s_type: torch.dtype = torch.float32,
    split: bool = False,
    half: bool = False,
):
    """``_chunked_name``'s op: the Triton kernels on a GPU or under the interpreter (the forward's
    products of type ``dot``, ``chunked_common.products``; the backward's ``backward_products``;
    ``half``: the ``products="half"`` option), else the same algebra in PyTorch (``chunked_torch``, fp32
    or fp64), its gradients by autograd. The coefficients come in their own type and strides (a stride
    may be 0) and are saved as they come. ``o_type``: o's (``chunked_common.o_dtype``; its gradient is
    read in the type it comes in). ``s_type``: the stored intermediates' (``store_dtype``; the kept
    states, U and W: ``forward_store``'s). With ``LAUNCH["keep"]`` (read per call) the Triton forward
    also returns, and saves, what the backward would otherwise rerun (``chunked_forward_kept``).
    ``split``: the intra-chunk scores as two terms of a 16-bit type (``LinearForm.split_scores``)."""
    from archdsl.codegen.run.chunked_common import LAUNCH, backward_products

    keep, bdot = bool(LAUNCH["keep"]), backward_products(dot, half)
    decays = keep and bool(LAUNCH["walk_cumsum"])  # G kept too (read per call, as ``keep``)
    name = _chunked_name(chunk, dot, o_type, s_type, keep, split, decays, half)

    def forward(xs: list[torch.Tensor], h0: torch.Tensor) -> list[torch.Tensor]:
        lw, q, k, v, *ab = xs
        if q.is_cuda or interpreted():
            from archdsl.codegen.run.chunked_kernels import chunked_forward_kept

            o, ht, kept = chunked_forward_kept(lw, q, k, v, ab, h0, chunk, dot, o_type, s_type, split, half)
            return [o, ht, *(kept if keep else [])]
        from archdsl.codegen.run.chunked_torch import chunked_torch

        with torch.no_grad():
            lw, q, k, v, *ab = _wide(xs)
            o, ht = chunked_torch(lw, q, k, v, ab, h0.to(q.dtype), chunk)
            return [o.to(o_type).contiguous(), ht.float().contiguous()]

    def fake(xs, h0):
        return _chunked_fake(xs, h0, chunk, keep, o_type, s_type, decays, half)

    def backward(xs: list[Tensor], h0: Tensor, kept: list[Tensor], do: Tensor, dht: Tensor) -> list[Tensor]:
        from archdsl.codegen.run.chunked_backward import chunked_backward

        return chunked_backward(*xs[:4], xs[4:], h0, do, dht, chunk, bdot, kept, s_type, half)

    def grads(ctx, out_grads, bwd):
        saved = ctx.saved_tensors
        xs, h0, kept = saved[: ctx.n], saved[ctx.n], list(saved[ctx.n + 1 :])
        do, dht = out_grads[:2]
        if do is None:
            do = torch.zeros(*xs[1].shape[:3], xs[3].shape[-1], device=h0.device, dtype=o_type)
        dht = torch.zeros_like(h0) if dht is None else dht.float().contiguous()
        if xs[1].is_cuda or interpreted():
            out = bwd(list(xs), h0, kept, do.contiguous(), dht)
        else:
            out = _recompute_grads(list(xs), h0, do, dht, chunk)
        return out[:-1], out[-1]

    return register(name, forward, fake, backward, _chunked_backward_fake, _chunked_save, grads)


def _chunked_name(
    chunk: int,
    dot: str,
    o_type: torch.dtype,
    s_type: torch.dtype,
    keep: bool,
    split: bool = False,
    decays: bool = False,
    half: bool = False,
) -> str:
    """``archdsl::chunked_c<C>_<dot>[_o<type>][_s<type>][_keep[g]][_split][_half]``: one op per
    chunk, products' type, o's and the stored intermediates' types (where not fp32), ``keep`` (``g``:
    G kept too, ``decays``), ``split`` and ``half``."""
    types = "".join(
        f"_{tag}" + str(t).removeprefix("torch.")
        for tag, t in (("o", o_type), ("s", s_type))
        if t != torch.float32
    )
    kept = ("_keep" if keep else "") + ("g" if keep and decays else "")
    tail = ("_split" if split else "") + ("_half" if half else "")
    return f"archdsl::chunked_c{chunk}_{dot}{types}{kept}{tail}"


def _chunked_fake(
    xs, h0, chunk: int, keep: bool, o_type: torch.dtype, s_type: torch.dtype, decays=False, half=False
) -> list[torch.Tensor]:
    """The chunked op's outputs on shapes only: o, the final state and, with ``keep``, the kept tensors
    (states, U, W in ``forward_store``'s type, T⁻¹ in fp32; with ``decays`` G, fp32, as the log-decays)."""
    from archdsl.codegen.run.chunked_common import forward_store

    B, T, H, K = xs[1].shape
    V = xs[3].shape[-1]
    s_type = forward_store(s_type, len(xs) > 4, half)
    out = [xs[1].new_empty(B, T, H, V, dtype=o_type), torch.empty_like(h0)]
    if keep and (xs[1].is_cuda or interpreted()):  # chunk_states' shapes and types
        N = -(-T // chunk)
        out.append(xs[1].new_empty(B * H, N, K, V, dtype=s_type))
        if len(xs) > 4:
            out += [xs[1].new_empty(B * H, N * chunk, R, dtype=s_type) for R in (V, K)]
            out.append(xs[1].new_empty(B * H, N, chunk, chunk, dtype=torch.float32))
        if decays:
            out.append(xs[0].new_empty(xs[0].shape, dtype=torch.float32))
    return out


def _chunked_backward_fake(xs, h0, kept, do, dht) -> list[torch.Tensor]:
    return [*(torch.empty(x.shape, dtype=x.dtype, device=x.device) for x in xs), torch.empty_like(h0)]


def _chunked_save(ctx, inputs, output) -> None:
    """Saves the coefficients, h0 and the kept tensors (outputs without a gradient)."""
    xs, h0 = inputs
    ctx.n = len(xs)
    _no_zeros(ctx, output[2:])  # grads fills do and dht
    ctx.save_for_backward(*xs, h0, *output[2:])


def interpreted() -> bool:
    """Does Triton run on the CPU (``chunked_common.interpreted``, looked up at every call)?"""
    from archdsl.codegen.run.chunked_common import interpreted as on_cpu

    return on_cpu()


def _wide(xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The coefficients in one type for the PyTorch form: fp64 if any is, else fp32."""
    wide = torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32
    return [x.to(wide) for x in xs]


def _recompute_grads(xs, h0, do, dht, chunk: int) -> list:
    """The gradients of the chunked recurrence, recomputed through its PyTorch form (plain autograd:
    a custom op's body runs below the autograd dispatch key, so this stays outside one)."""
    from archdsl.codegen.run.chunked_torch import chunked_torch

    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(True) for x in (*xs, h0)]
        lw, q, k, v, *rest = _wide(leaves[:-1])
        o, hT = chunked_torch(lw, q, k, v, rest, leaves[-1].to(q.dtype), chunk)
        return list(torch.autograd.grad([o, hT], leaves, [do.to(o.dtype), dht.to(hT.dtype)]))
