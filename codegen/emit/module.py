"""The generated module, in the shape of flash-linear-attention's ``fused_recurrent.py``: a short
header (the spec's name and settings, the plan, the step and its derived backward with the spec's
names), the axis sizes, helpers, the kernels, their launchers, a ``torch.autograd.Function`` per
kernel pair and the public function (``e88(a, k, v, q, …, h0=None) -> y, ht``)."""

from __future__ import annotations

from collections import Counter

from archdsl.codegen.emit.format import format_source
from archdsl.codegen.emit.fused import emit_forward, saved_names
from archdsl.codegen.emit.fused_backward import emit_backward
from archdsl.codegen.emit.names import identifier, module_name
from archdsl.codegen.emit.signature import PyNames, call
from archdsl.codegen.emit.token import emit_token_backward, emit_token_forward
from archdsl.codegen.emit.triton import HELPERS, LEAVES, spec_names
from archdsl.codegen.plan import Plan

from archdsl.autodiff import Backward, Cell
from archdsl.ir import Graph, LayerIR, Op


def _equations(g: Graph, roots: dict[str, int], limit: int = 400) -> list[str]:
    """The nodes under ``roots`` as one equation per line (``b12 = tanh(b11)``)."""
    lines = []
    for i in sorted(g.ancestors(roots.values())):
        n = g[i]
        if n.op in (Op.INPUT, Op.PARAM, Op.STATE):
            rhs = f"{n.op.value} {n.attr}"
        elif n.op is Op.CONST:
            rhs = repr(n.attr)
        else:
            args = ", ".join(f"b{a}" for a in n.args)
            rhs = f"{n.op.value}({args}{', ' + repr(n.attr) if n.attr is not None else ''})"
        lines.append(f"b{i}[{', '.join(n.axes)}] = {rhs}")
    lines += [f"{name} <- b{i}" for name, i in roots.items()]
    return lines[:limit] + (["…"] if len(lines) > limit else [])


# ---- the generated module -------------------------------------------------------------------------
_PREC = {Op.ADD: 1, Op.SUB: 1, Op.MUL: 2, Op.DIV: 2}
_SYM = {Op.ADD: "+", Op.SUB: "-", Op.MUL: "*", Op.DIV: "/"}


def _display(names: dict) -> dict[int, str]:
    """node -> the name the header writes (``kh``, ``S'``, ``dS'``) from ``spec_names``' table."""
    out = {}
    for i, (key, preferred) in names.items():
        text = preferred.removeprefix("b_")
        if key[0] == "next" or (key[0] == "grad" and key[1][0] == "next"):
            text = text.removesuffix("_next") + "'"
        out[i] = text
    return out


def named_equations(g: Graph, roots: dict[str, int], label: dict[int, str]) -> list[str]:
    """``name = expression`` for each value under ``roots`` that has a name or is used twice, with
    the others written inline (``delta = t0 - sum[i](S * kh)``)."""
    order = sorted(g.ancestors(roots.values()))
    uses = Counter(a for i in order for a in g[i].args)
    shown = {i for i in order if g[i].op not in LEAVES and (i in label or uses[i] > 1)}

    def atom(i: int) -> str:
        n = g[i]
        if n.op is Op.CONST:
            return repr(n.attr)
        return label.get(i) or (identifier(n.attr) if n.op in LEAVES else f"v{i}")

    def expr(i: int, outer: int = 0, top: bool = False) -> str:
        n = g[i]
        if n.op in LEAVES or (i in shown and not top):
            return atom(i)
        a = n.args
        if n.op in _SYM:
            p = _PREC[n.op]
            right = p + 1 if n.op in (Op.SUB, Op.DIV) else p
            text = f"{expr(a[0], p)} {_SYM[n.op]} {expr(a[1], right)}"
            return f"({text})" if p < outer else text
        if n.op is Op.NEG:
            return "-" + expr(a[0], 3)
        if n.op is Op.SUM:
            return f"sum[{n.attr}]({expr(a[0])})"
        if n.op is Op.EXPAND:
            return expr(a[0], outer)
        extra = f", {n.attr}" if n.op is Op.RENAME else ""
        return f"{n.op.value}({', '.join(expr(x) for x in a)}{extra})"

    lines = [f"{atom(i)} = {expr(i, top=True)}" for i in order if i in shown]
    for name, i in roots.items():
        if atom(i) != name:
            lines.append(f"{name} = {expr(i, top=i not in shown)}")
    return lines


def _plan_line(plan: Plan) -> str:
    split = ", ".join(plan.split) or "none"
    blocks = ", ".join(f"{a} {b}" for a, b in plan.block.items())
    return (
        f"# Plan: a sequential loop over (B, {plan.n_tiles}) programs (split {split}; blocks {blocks}), "
        f"checkpoint every {plan.chunk}"
    )


def emit_module(layer: LayerIR, cell: Cell, bwd: Backward, plan: Plan, parts=()) -> str:
    """The module's source, formatted (``format.py``). ``parts``: (kind, part, plan) of each stateless
    part in parallel kernels around the loop: ``token`` (per-token values hoisted before it),
    ``readout`` (the readout after it)."""
    name = module_name(layer.name)
    kinds = dict((kind, (part, pp)) for kind, part, pp in parts)
    readout = kinds.get("readout")
    y_name = next((n for n in readout[0].inputs if n not in layer.inputs()), "y") if readout else "y"
    camel = "".join(w.capitalize() for w in name.split("_"))
    words = {name, f"{camel}Function", *(f"{camel}{k.capitalize()}Function" for k in kinds)}
    words |= {
        f"{name}_{p}{d}{s}"
        for p in ("", *(f"{k}_" for k in kinds))
        for d in ("fwd", "bwd")
        for s in ("", "_kernel")
    }
    py = PyNames(plan.axes, words)
    kernels, launchers, header = [], [], _header(layer, cell, bwd, plan, kinds)
    if "token" in kinds:
        _part(kinds["token"], name, py, "token", kernels, launchers)
    fwd_kernel, fwd_launcher = emit_forward(cell, bwd, plan, name, py, y_name)
    bwd_kernel, bwd_launcher = emit_backward(cell, bwd, plan, name, py, y_name)
    kernels += [fwd_kernel, bwd_kernel]
    launchers += [fwd_launcher, bwd_launcher]
    if readout:
        _part(readout, name, py, "readout", kernels, launchers)
    api = functions(layer, cell, name, camel, py, kinds, y_name, saved_names(cell, bwd, plan, py))
    return _assemble(layer, header, plan.axes, py, kernels, launchers, api)


def _assemble(layer: LayerIR, header, axes, py: PyNames, kernels, launchers, api=()) -> str:
    """The module's text in its order (header, imports, sizes, helpers, kernels, launchers, the
    autograd Functions and public function), formatted."""
    sizes = f"{', '.join(py.size.values())} = {', '.join(str(layer.sizes[a]) for a in axes)}"
    body = [
        "\n".join(header),
        "import torch\nimport triton\nimport triton.language as tl",
        f"{sizes}  # the sizes of axes {', '.join(axes)}",
        HELPERS.strip("\n"),
        *("\n".join(k) for k in kernels),
        *("\n".join(k) for k in launchers),
        *api,
    ]
    return format_source("\n\n\n".join(body) + "\n", layer.name)


def _part(part_plan, name, py, kind, kernels, launchers) -> None:
    part, pp = part_plan
    for kernel, launcher in (
        emit_token_forward(part, pp, name, py, kind),
        emit_token_backward(part, pp, name, py, kind),
    ):
        kernels.append(kernel)
        launchers.append(launcher)


def _header(layer: LayerIR, cell: Cell, bwd: Backward, plan: Plan, kinds) -> list[str]:
    settings = ", ".join(f"{k}={v}" for k, v in {**layer.hypers, **layer.choices}.items())
    label = _display(spec_names(cell.graph, cell.names, cell.next_state))
    roots = {**{f"{s}'": i for s, i in cell.next_state.items()}, "y": cell.output}
    blabel = _display(spec_names(bwd.graph, cell.names, cell.next_state, bwd.cotangent, len(cell.graph)))
    broots = {
        **{f"d{s}": i for s, i in bwd.d_state.items()},
        **{f"d{n}": i for n, i in bwd.d_inputs.items()},
        **{f"d{c}": i for c, i in bwd.d_consts.items()},
    }
    out = [
        f"# {layer.name!r} ({settings}): generated by archdsl, do not edit.",
        _plan_line(plan),
    ]
    if "token" in kinds:
        part = kinds["token"][0]
        plabel = _display(spec_names(part.graph, part.names))
        out += ["#", "# Per token, in parallel kernels before the loop:"]
        out += ["#   " + e for e in named_equations(part.graph, part.outputs, plabel)]
    out += ["#", "# The step (S is a state before it, S' after it):"]
    out += ["#   " + e for e in named_equations(cell.graph, roots, label)]
    if "readout" in kinds:
        part = kinds["readout"][0]
        out += ["#", "# The readout, in parallel kernels after the loop:"]
        out += [
            "#   " + e
            for e in named_equations(part.graph, part.outputs, _display(spec_names(part.graph, part.names)))
        ]
    out += [
        "#",
        "# Its derived backward (dX is the cotangent of X; dS on the left is carried to the step before):",
    ]
    out += ["#   " + e for e in named_equations(bwd.graph, broots, blabel)]
    return out


_ROLE = {"token": "The per-token values before the loop.", "readout": "The readout after the loop."}


def functions(
    layer: LayerIR, cell: Cell, name: str, camel: str, py: PyNames, kinds, y_name: str, ck: list[str]
) -> list[str]:
    """The ``torch.autograd.Function`` of the loop and of each part, and the public function; ``ck``:
    what the loop's forward keeps for its backward (``fused.saved_names``)."""
    states = list(cell.states)
    ins = [py(("t", n), "") for n in cell.inputs] + [py(("c", c), "") for c in cell.consts]
    h0, ht = ([py((r, s), "") for s in states] for r in ("h0", "ht"))
    y = py(("t", y_name), "")
    out = [
        "\n".join(
            [
                f"class {camel}Function(torch.autograd.Function):",
                '    """The loop: per-token inputs and initial states -> readout and final states."""',
                "",
                "    @staticmethod",
                call("def forward", ["ctx", *ins, *h0], ":", 1),
                call(", ".join([y, *ht, *ck]) + f" = {name}_fwd", [*ins, *h0], "", 2),
                call("ctx.save_for_backward", [*ins, *ck], "", 2),
                f"        return {', '.join([y, *ht])}",
                "",
                "    @staticmethod",
                call(
                    "def backward",
                    ["ctx", py(("d", y_name), ""), *(py(("dht", s), "") for s in states)],
                    ":",
                    1,
                ),
                f"        {', '.join([*ins, *ck])} = ctx.saved_tensors",
                call(
                    f"return {name}_bwd",
                    [*ins, *ck, py(("d", y_name), ""), *(py(("dht", s), "") for s in states)],
                    "",
                    2,
                ),
            ]
        )
    ]
    for kind, (part, _) in kinds.items():
        p_ins = [py(("t", n), "") for n in part.inputs] + [py(("c", c), "") for c in part.consts]
        p_outs = [py(("d", o), "") for o in part.outputs]
        out.append(
            "\n".join(
                [
                    f"class {camel}{kind.capitalize()}Function(torch.autograd.Function):",
                    f'    """{_ROLE[kind]}"""',
                    "",
                    "    @staticmethod",
                    call("def forward", ["ctx", *p_ins], ":", 1),
                    call("ctx.save_for_backward", p_ins, "", 2),
                    call(f"return {name}_{kind}_fwd", p_ins, "", 2),
                    "",
                    "    @staticmethod",
                    call("def backward", ["ctx", *p_outs], ":", 1),
                    call(f"return {name}_{kind}_bwd", ["*ctx.saved_tensors", *p_outs], "", 2),
                ]
            )
        )
    out.append(_public(layer, cell, name, camel, py, kinds, y_name))
    return out


def _public(layer: LayerIR, cell: Cell, name: str, camel: str, py: PyNames, kinds, y_name: str) -> str:
    token, readout = (kinds[k][0] if k in kinds else None for k in ("token", "readout"))
    made = set(token.outputs) if token else set()
    inputs, consts = {}, {}
    for c in (token, cell, readout):
        if c is not None:
            inputs.update({n: ax for n, ax in c.inputs.items() if n not in made and n != y_name})
            consts.update(c.consts)
    first = py(("t", next(iter(inputs))), "")
    x, cs = [py(("t", n), "") for n in inputs], [py(("c", c), "") for c in consts]
    h0 = [py(("h0", s), "") for s in cell.states]
    ht = [py(("ht", s), "") for s in cell.states]
    doc = [f"{py(('t', n), '')} [{py.dims('B, T', ax)}]" for n, ax in inputs.items()]
    doc += [f"{py(('c', c), '')} [{py.dims(ax)}]" for c, ax in consts.items()]
    doc += [f"{py(('h0', s), '')} [{py.dims('B', ax)}] fp32 or None (zeros)" for s, ax in cell.states.items()]
    outs = [f"y [{py.dims('B, T', cell.output_axes if not readout else readout.output_axes('y'))}]"]
    outs += [f"{py(('ht', s), '')} [{py.dims('B', ax)}] fp32" for s, ax in cell.states.items()]
    lines = [
        call(f"def {name}", [*x, *cs, *(f"{h}=None" for h in h0)], ":", 0),
        f'    """{name}: the per-token inputs (made by the projections), the values of the parameters',
        "    (constants c<k> are parameter-only values computed outside), the initial states.",
        "",
        *("    " + d for d in doc),
        "",
        "    -> " + ", ".join(outs) + ' (y in the inputs\' dtype)."""',
    ]
    for v in [*x, *cs]:
        lines.append(f"    {v} = {v}.contiguous()")
    lines.append(f"    B, T = {first}.shape[:2]")
    for s, h in zip(cell.states, h0):
        shape = py.dims("B", cell.states[s])
        lines.append(
            f"    {h} = {first}.new_zeros({shape}, dtype=torch.float32) if {h} is None"
            f" else {h}.float().contiguous()"
        )
    if token is not None:
        t_ins = [py(("t", n), "") for n in token.inputs] + [py(("c", c), "") for c in token.consts]
        t_outs = [py(("t", o), "") for o in token.outputs]
        t_head = ", ".join(t_outs) + ("," if len(t_outs) == 1 else "") + f" = {camel}TokenFunction.apply"
        lines.append(call(t_head, t_ins, "", 1))
    l_ins = [py(("t", n), "") for n in cell.inputs] + [py(("c", c), "") for c in cell.consts]
    y = py(("t", y_name), "")
    lines.append(call(", ".join([y, *ht]) + f" = {camel}Function.apply", [*l_ins, *h0], "", 1))
    if readout is not None:
        r_ins = [py(("t", n), "") for n in readout.inputs] + [py(("c", c), "") for c in readout.consts]
        lines.append(call(f"{y} = {camel}ReadoutFunction.apply", r_ins, "", 1))
    lines.append(f"    return {', '.join([f'{y}.to({first}.dtype)', *ht])}")
    return "\n".join(lines)


_PART_ROLE = {
    "token": "Per token, before the chunked kernels (the linear form's coefficients):",
    "readout": "The readout, after them:",
}


def emit_parts_module(layer: LayerIR, parts) -> str:
    """A module of stateless parts alone, ``parts``: (kind, part, plan) each, two kernels and two
    launchers a part: the chunked strategy's per-token coefficients (before its kernels) and its
    readout (after them)."""
    name = module_name(layer.name)
    words = {f"{name}_{kind}_{d}{s}" for kind, _, _ in parts for d in ("fwd", "bwd") for s in ("", "_kernel")}
    axes = parts[0][2].axes
    py = PyNames(axes, words)
    kernels, launchers = [], []
    header = [f"# {layer.name!r}: generated by archdsl, do not edit.", "#"]
    for kind, part, pp in parts:
        _part((part, pp), name, py, kind, kernels, launchers)
        header += [f"# {_PART_ROLE[kind]}"]
        header += [
            "#   " + e
            for e in named_equations(part.graph, part.outputs, _display(spec_names(part.graph, part.names)))
        ]
    return _assemble(layer, header, axes, py, kernels, launchers)
