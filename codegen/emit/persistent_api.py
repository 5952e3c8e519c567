"""The Python level of the persistent module (after its kernels, ``persistent.py``): the launchers,
the ``torch.autograd.Function`` and the public function with a shape docstring, so that the module
runs on its own like the loop's (``e1(wx, z, c0, W_h, h0=None) -> y, ht``). The runtime
(``codegen/run/persistent.py``) calls the same launchers. Text only: no torch.

The launchers are one fixed text, ``LAUNCHERS``, over the module's constants: a persistent launch per
direction while every program can be resident at once (or the grid is one program), else one launch
per step, whose boundary is the grid barrier (Triton's CPU interpreter runs programs one by one)."""

from __future__ import annotations

from archdsl.codegen.analysis import DenseLayout, step_inputs
from archdsl.codegen.emit.fused import state_word
from archdsl.codegen.emit.signature import PyNames, call
from archdsl.codegen.emit.triton import const_labels
from archdsl.codegen.plan import DOT_MIN, MAX_BLOCK_B

from archdsl.autodiff import Cell

# the module's own words at its Python level (a spec name meeting one gets a suffix)
MODULE_WORDS = (
    *("os", "functools", "fwd_kernel", "bwd_kernel", "LAST_SYNC", "_DOT_T", "_sm_count", "_blocks"),
    *("_launch", "_grid_arrive", "_grid_wait", "ROWS_SIZE", "TILES", "BLOCK_K", "NUM_WARPS"),
    *("MAX_BLOCK_B", "DOT_MIN", "Y_SIZES", "TILED", "OPERANDS", "READS", "y", "finals", "hs", "hv"),
    *("mv", "saved", "dy", "dxs", "dcs", "dws", "dh0"),
)

LAUNCHERS = '''
_DOT_T = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}
LAST_SYNC = []  # the barrier counters [arrivals, timed out] of the last persistent launches


@functools.cache
def _sm_count(index):
    return torch.cuda.get_device_properties(index).multi_processor_count


def _blocks(B):
    """(batch rows per program, columns per tl.dot, programs): a wider batch block, a narrower k."""
    bb = max(DOT_MIN, min(MAX_BLOCK_B, triton.next_power_of_2(B)))
    block_k = max(DOT_MIN, min(BLOCK_K, 8192 // bb, triton.next_power_of_2(ROWS_SIZE)))
    return bb, block_k, TILES * triton.cdiv(B, bb)


def _launch(kernel, args, B, T, reverse):
    dev = args[0].device
    bb, block_k, n_prog = _blocks(B)
    interpreting = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    # operands in the input dtype, fp32 accumulation; fp32 exactly (no TF32). The CPU interpreter
    # multiplies bf16 blocks wrongly, so there they are widened first (exactly).
    dot_t = _DOT_T.get(args[0].dtype, tl.float32)
    if interpreting or dev.type != "cuda":
        dot_t = tl.float32
    dot_prec = "ieee" if dot_t == tl.float32 else "tf32"
    # all programs resident at once (one per SM at most), or a single program (no barrier needed)
    on_gpu = dev.type == "cuda" and not interpreting
    persistent = n_prog == 1 or (on_gpu and n_prog <= _sm_count(dev.index or 0))
    persistent = persistent and os.environ.get("ARCHDSL_PERSISTENT", "1") != "0"
    opts = dict(BLOCK_B=bb, BLOCK_K=block_k, DOT_T=dot_t, DOT_PREC=dot_prec, num_warps=NUM_WARPS)
    sync = torch.zeros(2, dtype=torch.int32, device=dev)
    if not reverse:
        LAST_SYNC.clear()
    if persistent:
        LAST_SYNC.append(sync)
        kernel[(n_prog,)](*args, sync, B, T, 0, T, PERSISTENT=True, **opts)
        if on_gpu:  # a barrier that gave up means wrong numbers: fail loudly, without a host sync
            torch._assert_async(sync[1] == 0, "archdsl: a persistent kernel's grid barrier timed out")
        return
    LAST_SYNC.clear()
    for t in range(T - 1, -1, -1) if reverse else range(T):  # the launch boundary is the barrier
        kernel[(n_prog,)](*args, sync, B, T, t, t + 1, PERSISTENT=False, **opts)


def {name}_persistent_fwd(xs, cs, ws, h0):
    """-> y, the final states, and for the backward: every state hs [B, T + 1, ...] (fp32), the
    contractions' operands hv [T + 1, B, D] (input dtype), the contractions mv [B, T, D] (fp32)."""
    B, T = xs[0].shape[:2]
    dev, dt = xs[0].device, xs[0].dtype
    hs = []
    for v in h0:
        buf = torch.empty(B, T + 1, *v.shape[1:], device=dev)
        buf[:, 0] = v
        hs.append(buf)
    hv = []
    for s in OPERANDS:
        buf = torch.empty(T + 1, B, ROWS_SIZE, device=dev, dtype=dt)
        buf[0] = h0[s]
        hv.append(buf)
    mv = [torch.empty(B, T, ROWS_SIZE, device=dev) for _ in ws]
    y = torch.empty(B, T, *Y_SIZES, device=dev, dtype=dt)
    wf = [w.t().contiguous() for w in ws]  # [contracted, rows]: a program reads its rows' columns
    _launch({name}_persistent_fwd_kernel, [*xs, *cs, *wf, *hs, *hv, *mv, y], B, T, reverse=False)
    return y, [h[:, T].clone() for h in hs], hs, hv, mv


def {name}_persistent_bwd(xs, cs, ws, hs, hv, mv, dy, dht):
    """-> the gradients of xs, cs, ws and of the initial states."""
    B, T = xs[0].shape[:2]
    dev, dt = xs[0].device, xs[0].dtype
    dh = [d.float().contiguous().clone() for d in dht]
    g = [torch.empty(T + 1, B, ROWS_SIZE, device=dev, dtype=dt) for _ in ws]  # cotangents of mv
    for x in g:
        x[T] = 0
    dxs = []  # in the input dtype; fp32 partials per tile where an input lacks the rows' axis
    for tiled, x in zip(TILED, xs):
        shape = (B, T, TILES, *x.shape[2:]) if tiled else x.shape
        dxs.append(torch.empty(shape, device=dev, dtype=torch.float32 if tiled else x.dtype))
    dcs = [torch.zeros(_blocks(B)[2], *c.shape, device=dev) for c in cs]
    args = [*xs, *cs, *ws, *hs, *mv, dy.contiguous(), *dh, *g, *dxs, *dcs]
    _launch({name}_persistent_bwd_kernel, args, B, T, reverse=True)
    dxs = [d.sum(2).to(x.dtype) if d.dim() > x.dim() else d for d, x in zip(dxs, xs)]
    dcs = [d.sum(0).to(c.dtype) for d, c in zip(dcs, cs)]
    dws, dh0 = [], list(dh)
    for m, (w, gm) in enumerate(zip(ws, g)):  # each matrix: one GEMM over every (step, batch)
        hprev = hv[READS[m]][:T].reshape(T * B, ROWS_SIZE)
        dws.append((gm[:T].reshape(T * B, ROWS_SIZE).t() @ hprev).to(w.dtype))
        s = OPERANDS[READS[m]]
        dh0[s] = dh0[s] + gm[0].float() @ w.float()
    return dxs, dcs, dws, dh0
'''


def constants(
    cell: Cell, step: Cell, lay: DenseLayout, tiles: int, block_k: int, num_warps: int, py: PyNames
) -> str:
    """The module's run-time constants that ``LAUNCHERS`` reads."""
    ins, _ = step_inputs(step)
    states = list(step.states)
    operands = sorted(set(lay.operand))
    rows = py.size[lay.rows]
    out_sizes = "".join(f"{py.size[a]}, " for a in step.output_axes)
    tiled = "".join(f"{lay.rows not in step.inputs[n]}, " for n in ins)
    return "\n".join(
        [
            f"{', '.join(py.size.values())} = {', '.join(str(cell.sizes[a]) for a in py.size)}"
            f"  # the sizes of axes {', '.join(py.size)}",
            f"ROWS_SIZE = {rows}  # the rows' axis ({lay.rows}), tiled across programs",
            f"TILES, BLOCK_K, NUM_WARPS = {tiles}, {block_k}, {num_warps}  # programs per batch block",
            f"MAX_BLOCK_B, DOT_MIN = {MAX_BLOCK_B}, {DOT_MIN}",
            f"Y_SIZES = ({out_sizes})",
            f"TILED = ({tiled})  # per input: it lacks the rows' axis (partials per tile, summed)",
            f"OPERANDS = ({''.join(f'{states.index(s)}, ' for s in operands)})  # states the matrices read",
            f"READS = ({''.join(f'{operands.index(s)}, ' for s in lay.operand)})  # per matrix: its operand",
        ]
    )


def functions(
    cell: Cell, step: Cell, lay: DenseLayout, matrices: list[str], name: str, py: PyNames
) -> list[str]:
    """The ``torch.autograd.Function`` and the public function (``matrices``: each contraction's
    constant of ``cell``, in the kernels' order)."""
    camel = "".join(w.capitalize() for w in name.split("_"))
    ins, consts = step_inputs(step)
    labels = {**const_labels(cell.graph, cell.names), **const_labels(step.graph, step.names)}
    xs = [py(("t", n), n) for n in ins]
    cs = [py(("c", c), labels.get(c, c)) for c in consts]
    ws = [py(("c", c), labels.get(c, c)) for c in matrices]
    h0 = [py(("h0", s), state_word(step, "h0", s)) for s in step.states]
    dht = [py(("dht", s), state_word(step, "dht", s)) for s in step.states]
    n_s, n_v = len(h0), len(set(lay.operand))
    fn = "\n".join(
        [
            f"class {camel}PersistentFunction(torch.autograd.Function):",
            '    """The whole sequence: per-token inputs, parameters, initial states -> y, final states."""',
            "",
            "    @staticmethod",
            call("def forward", ["ctx", *xs, *cs, *ws, *h0], ":", 1),
            f"        y, finals, hs, hv, mv = {name}_persistent_fwd([{', '.join(xs)}], [{', '.join(cs)}], "
            f"[{', '.join(ws)}], [{', '.join(h0)}])",
            call("ctx.save_for_backward", [*xs, *cs, *ws, "*hs", "*hv", "*mv"], "", 2),
            "        return y, *finals",
            "",
            "    @staticmethod",
            call("def backward", ["ctx", "dy", *dht], ":", 1),
            f"        {', '.join([*xs, *cs, *ws, '*saved'])} = ctx.saved_tensors",
            f"        hs, hv, mv = saved[:{n_s}], saved[{n_s} : {n_s + n_v}], saved[{n_s + n_v} :]",
            f"        dxs, dcs, dws, dh0 = {name}_persistent_bwd([{', '.join(xs)}], [{', '.join(cs)}], "
            f"[{', '.join(ws)}], hs, hv, mv, dy, [{', '.join(dht)}])",
            "        return *dxs, *dcs, *dws, *dh0",
        ]
    )
    return [fn, _public(cell, step, lay, matrices, name, camel, py, (xs, cs, ws, h0))]


def _public(cell: Cell, step: Cell, lay: DenseLayout, matrices, name, camel, py: PyNames, args) -> str:
    xs, cs, ws, h0 = args
    ins, consts = step_inputs(step)
    first = xs[0]
    doc = [f"{x} [{py.dims('B, T', step.inputs[n])}]" for x, n in zip(xs, ins)]
    doc += [f"{c} [{py.dims(step.consts[n])}]" for c, n in zip(cs, consts)]
    doc += [f"{w} [{py.dims(cell.consts[n])}] (a matrix, multiplied inside)" for w, n in zip(ws, matrices)]
    doc += [f"{h} [{py.dims('B', ax)}] fp32 or None (zeros)" for h, ax in zip(h0, step.states.values())]
    ht = [f"{state_word(step, 'ht', s)} [{py.dims('B', ax)}] fp32" for s, ax in step.states.items()]
    lines = [
        call(f"def {name}", [*xs, *cs, *ws, *(f"{h}=None" for h in h0)], ":", 0),
        f'    """{name}, persistent: the per-token inputs (made by the projections), the parameter-only',
        "    values (computed outside), each contraction's matrix as the spec writes it, the initial states.",
        "",
        *("    " + d for d in doc),
        "",
        f'    -> y [{py.dims("B, T", step.output_axes)}] (the inputs\' dtype), {", ".join(ht)}."""',
        f"    B, T = {first}.shape[:2]",
    ]
    for h, ax in zip(h0, step.states.values()):
        lines.append(
            f"    {h} = {first}.new_zeros({py.dims('B', ax)}, dtype=torch.float32) if {h} is None"
            f" else {h}.float().contiguous()"
        )
    for w, rm in zip(ws, lay.row_major):  # [rows, contracted] in the inputs' dtype
        lines.append(f"    {w} = {w if rm else f'{w}.t()'}.to({first}.dtype).contiguous()")
    args = [f"{v}.contiguous()" for v in [*xs, *cs]] + [*ws, *h0]
    lines.append(call(f"return {camel}PersistentFunction.apply", args, "", 1))
    return "\n".join(lines)
