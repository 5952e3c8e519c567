"""The kernels of a stateless per-token part (the values hoisted before the loop, or the readout
after it) and their launchers: one program per (batch element, CHUNK tokens), no recurrence.

An input is read at its batch and token strides (kernel arguments), so a slice of a projection's
output, whose tokens lie a projection's width apart, is read where it is; within a token its
elements are compact (``runtime.token_strided``). Outputs and gradients are compact."""

from __future__ import annotations

from archdsl.codegen.emit.fused import _rebase, _sizes, launcher_def
from archdsl.codegen.emit.signature import PyNames, Signature
from archdsl.codegen.emit.triton import _Kernel, _leaf_ids, _needed, const_labels, spec_names
from archdsl.codegen.hoist import TokenPart
from archdsl.codegen.plan import Plan

from archdsl.autodiff import GRAD
from archdsl.ir import Op


def _kernel(part: TokenPart, g, plan: Plan, py: PyNames, names: dict) -> _Kernel:
    k = _Kernel(plan, names, py.size)
    k.labels = const_labels(part.graph, part.names)
    return k


def _leaves(k: _Kernel, part: TokenPart, py: PyNames, sig: Signature) -> list[str]:
    """The part's inputs (each with its batch and token strides) and constants as parameters; returns
    their Python names."""
    out = []
    for n in part.inputs:
        t = py(("t", n), n)
        sig.arg(k.ptr("in", n), t)
        sig.arg(_stride(k, "sb", n), f"{t}.stride(0)")
        sig.arg(_stride(k, "st", n), f"{t}.stride(1)")
        out.append(t)
    for c in part.consts:
        sig.arg(k.ptr("const", c), py(("c", c), k.label(c)))
        out.append(py(("c", c), k.label(c)))
    return out


def _stride(k: _Kernel, which: str, name: str) -> str:
    """An input's batch (``sb``) or token (``st``) stride argument."""
    return k.ns((which, name), f"{which}_{k.label(name)}")


def _loads(k: _Kernel, g, order, strided) -> None:
    """Loads the inputs of this token: those in ``strided`` at their strides, the rest (the outputs'
    cotangents) compact."""
    for n, i in _leaf_ids(g, order, Op.INPUT).items():
        if n in strided:
            sb, st = _stride(k, "sb", n), _stride(k, "st", n)
            at = f"{k.ptr('in', n)} + i_b * {sb} + tl.cast(t, tl.int64) * {st}"
        else:
            at = f"{k.ptr('in', n)} + (i_b * T + t) * {k.numel(g[i].axes)}"
        k.w(f"{k.val(i)} = {k.load(at, g[i].axes, 't < T')}", 2)


def _store_token(k: _Kernel, ptr: str, ax, val: str, cast: bool) -> None:
    mask = " & ".join(m for m in (k.mask(ax) if ax else "None", "(z0 + t < T)") if m != "None")
    if cast:
        val = f"({val}).to({ptr}.dtype.element_ty)"
    k.w(f"tl.store({ptr} + (i_b * T + t) * {k.numel(ax)}, {val}, mask={mask})", 2)


def emit_token_forward(part: TokenPart, plan: Plan, name: str, py: PyNames, kind: str = "token") -> tuple:
    """(the kernel's lines, its launcher's lines)."""
    g = part.graph
    order = _needed(g, part.outputs.values())
    k = _kernel(part, g, plan, py, spec_names(g, part.names))
    k.fold(g, [order], set(part.outputs.values()))
    sig = Signature()
    params = _leaves(k, part, py, sig)
    outs = {o: sig.arg(k.ptr("out", o), py(("t", o), o)) for o in part.outputs}
    _sizes(sig, py, plan.axes)
    k.lines += sig.define(f"{name}_{kind}_fwd_kernel")
    k.prologue()
    tensors = [(k.ptr("in", n), ax) for n, ax in part.inputs.items()]
    tensors += [(k.ptr("const", c), ax) for c, ax in part.consts.items()]
    _rebase(k, tensors + [(outs[o], part.output_axes(o)) for o in part.outputs])
    k.load_consts(part, _leaf_ids(g, order, Op.PARAM))
    k.w("for s in range(CHUNK):")
    k.w("t = i_s * CHUNK + s  # this program's tokens: i_s * CHUNK …", 2)
    _loads(k, g, order, part.inputs)
    k.compute(g, order, 2)
    for o, i in part.outputs.items():
        _store_token(k, outs[o], g[i].axes, k.val(i), cast=True)
    first = params[0]
    names = [py(("t", o), "") for o in part.outputs]
    launcher = [
        *launcher_def(f"{name}_{kind}_fwd", [*params, "dtypes=None"], plan),
        f'    """-> {", ".join(names)}, each of its type in ``dtypes`` (fp32 sums rounded once; None:'
        ' all fp32)."""',
        f"    B, T = {first}.shape[:2]",
        f"    dtypes = dtypes or ({'torch.float32, ' * len(part.outputs)})",
    ]
    for n, o in enumerate(part.outputs):
        shape = py.dims("B, T", part.output_axes(o))
        launcher.append(f"    {py(('t', o), '')} = {first}.new_empty({shape}, dtype=dtypes[{n}])")
    launcher += sig.launch(f"{name}_{kind}_fwd_kernel", "(B, triton.cdiv(T, chunk))")
    launcher.append(f"    return {', '.join(names)}")
    return k.lines, launcher


def emit_token_backward(part: TokenPart, plan: Plan, name: str, py: PyNames, kind: str = "token") -> tuple:
    """Its derived backward: cotangents of its outputs -> gradients of its inputs and constants."""
    bwd = part.backward
    g = bwd.graph
    outs = [*bwd.d_inputs.values(), *bwd.d_consts.values()]
    order = _needed(g, outs)
    k = _kernel(part, g, plan, py, spec_names(g, part.names, None, bwd.cotangent, len(part.graph)))
    stored = set(bwd.d_inputs.values())
    summed = {c: _sums_after_loop(g, order, bwd.d_consts[c], stored) for c in part.consts}
    k.fold(g, [order], set(outs) | {acc for acc, _ in summed.values()})
    sig = Signature()
    params = _leaves(k, part, py, sig)
    for o in part.outputs:
        sig.arg(k.ptr("in", GRAD + o), py(("d", o), "d" + o))
        params.append(py(("d", o), ""))
    d_in = {n: sig.arg(k.dptr("in", n), py(("d", n), "d" + n)) for n in part.inputs}
    d_c = {c: sig.arg(k.dptr("const", c), py(("dc", c), "d" + k.label(c))) for c in part.consts}
    _sizes(sig, py, plan.axes)
    k.lines += sig.define(f"{name}_{kind}_bwd_kernel")
    k.prologue()
    k.w("NC = tl.cdiv(T, CHUNK)")
    k.w("pid = i_b * NC + i_s")
    tensors = [(k.ptr("in", n), ax) for n, ax in part.inputs.items()]
    tensors += [(k.ptr("const", c), ax) for c, ax in part.consts.items()]
    tensors += [(k.ptr("in", GRAD + o), part.output_axes(o)) for o in part.outputs]
    tensors += [(d_in[n], ax) for n, ax in part.inputs.items()] + [
        (d_c[c], ax) for c, ax in part.consts.items()
    ]
    _rebase(k, tensors)
    k.load_consts(part, _leaf_ids(g, order, Op.PARAM))
    for c, (acc, _) in summed.items():
        k.w(f"{k.dblk('const', c)} = tl.zeros({k.shape(g[acc].axes)}, tl.float32)")
    k.w("for s in range(CHUNK):")
    k.w("t = i_s * CHUNK + s", 2)
    _loads(k, g, order, part.inputs)
    k.compute(g, order, 2, skip={i for _, sums in summed.values() for i in sums})
    for n, ax in part.inputs.items():
        _store_token(k, d_in[n], ax, k.val(bwd.d_inputs[n]), cast=True)
    for c, (acc, _) in summed.items():  # tokens past T loaded zeros: their terms may not be finite
        k.w(f"{k.dblk('const', c)} += tl.where(z0 + t < T, {k.val(acc)}, 0.0)", 2)
    _store_const_grads(k, g, part, summed, d_c)
    first = params[0]
    launcher = [
        *launcher_def(f"{name}_{kind}_bwd", params, plan),
        '    """-> the gradients of the inputs and the constants."""',
        f"    B, T = {first}.shape[:2]",
    ]
    launcher += [f"    {py(('d', o), '')} = {py(('d', o), '')}.contiguous()" for o in part.outputs]
    rets = []
    for n in part.inputs:
        t = py(("t", n), "")
        launcher.append(f"    {d_py(py, 'd', n)} = {t}.new_empty({t}.shape)")
        rets.append(d_py(py, "d", n))
    for c, ax in part.consts.items():
        shape = py.dims("B * triton.cdiv(T, chunk)", ax)
        launcher.append(f"    {d_py(py, 'dc', c)} = {first}.new_empty({shape}, dtype=torch.float32)")
        rets.append(f"{d_py(py, 'dc', c)}.sum(0).to({py(('c', c), '')}.dtype)")
    launcher += sig.launch(f"{name}_{kind}_bwd_kernel", "(B, triton.cdiv(T, chunk))")
    launcher.append(f"    return {', '.join(rets)}")
    return k.lines, launcher


def _store_const_grads(k: _Kernel, g, part: TokenPart, summed: dict, ptrs: dict) -> None:
    """After the token loop: each constant's accumulated gradient summed over its broadcast axes
    (``_sums_after_loop``), stored as this program's partial gradient."""
    for c, (_, sums) in summed.items():
        for i in reversed(sums):
            k.w(f"{k.dblk('const', c)} = {k.sum_expr(g[i].attr, k.dblk('const', c))}")
    for c, ax in part.consts.items():
        k.store(f"{ptrs[c]} + pid * {k.numel(ax)}", k.dblk("const", c), ax)


def _sums_after_loop(g, order, grad: int, stored: set[int]) -> tuple[int, list[int]]:
    """(the value a constant's gradient accumulates over the tokens, the sums applied once after the
    loop, outermost first). A gradient that sums a per-token value over the constant's broadcast axes
    (``norm_w[j]`` read at every head: a sum over ``h``) is summed after the token loop, not at every
    token: each sum is a reduction across the program's warps, and a sum commutes with the sum over
    tokens. Only sums nothing else in the loop reads or stores (``stored``: the inputs' gradients)."""
    uses: dict[int, int] = {}
    for i in order:
        for a in g[i].args:
            uses[a] = uses.get(a, 0) + 1
    sums, i = [], grad
    while g[i].op is Op.SUM and i not in stored and uses.get(i, 0) == (0 if i == grad else 1):
        sums.append(i)
        i = g[i].args[0]
    return i, sums


def d_py(py: PyNames, role: str, name: str) -> str:
    return py((role, name), "")
