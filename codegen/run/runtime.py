"""Compiled cells at run time: the generated module cached on disk under a hash of its source, the
launchers, and the ``torch.library`` custom ops (forward, and backward registered as its autograd
formula) through which PyTorch and ``torch.compile`` call them."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import torch
from archdsl.codegen.plan import Plan

from archdsl.autodiff import Backward, Cell


def cache_dir() -> Path:
    """``$ARCHDSL_CACHE/kernels`` (default ``~/.cache/archdsl/kernels``), private to its owner (0o700):
    the modules in it are imported, so no other user may write there."""
    root = os.environ.get("ARCHDSL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "archdsl")
    path = Path(root) / "kernels"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_mode & 0o077 and st.st_uid == os.getuid():  # made by an older archdsl, or by hand
        path.chmod(0o700)
    return path


def load_module(source: str, name: str):
    """Write ``source`` atomically under its hash and import it (Triton's @jit needs a real file).

    A file already in the cache is imported only if it holds exactly ``source`` (the text its name's
    hash stands for); anything else there (a damaged or planted file) is replaced first."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    path = cache_dir() / f"{name}_{digest}.py"
    try:
        intact = path.read_bytes() == source.encode()
    except OSError:  # missing (or unreadable: rewritten below)
        intact = False
    if not intact:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    mod_name = f"archdsl_kernels.{path.stem}"
    if mod_name in sys.modules:
        return sys.modules[mod_name], digest, path
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module, digest, path


class CompiledCell:
    """Callable like the reference cell: ``(inputs, frontier, state0) -> (y, final states)``."""

    def __init__(self, cell: Cell, bwd: Backward, plan: Plan, module, digest: str, path: Path, stem: str):
        self.cell, self.bwd, self.plan, self.stem = cell, bwd, plan, stem
        self.module, self.hash, self.path = module, digest, path
        self.input_names = list(cell.inputs)
        self.const_names = list(cell.consts)
        self.state_names = list(cell.states)

    strategy = "loop"

    def describe(self) -> list[tuple[str, str]]:
        """(label, text) lines for ``archdsl compile``: the plan of the loop."""
        info = self.plan.describe(self.cell.states)
        split = ", ".join(info["split_axes"]) or "-"
        return [
            ("grid", f"{info['grid']} programs; split axes {split}; blocks {info['blocks']}"),
            ("state/program", f"{info['state_bytes_per_program']:,} bytes in registers (fp32)"),
            (
                "checkpoints",
                f"every {info['checkpoint_stride']} steps (backward recomputes each segment once)",
            ),
            ("warps", str(info["num_warps"])),
        ]

    def __call__(self, inputs, frontier, state0=None):
        xs = [inputs[n].contiguous() for n in self.input_names]
        cs = [frontier[self.cell.const_source[c]].contiguous() for c in self.const_names]
        B = xs[0].shape[0]
        h0 = []
        for s in self.state_names:
            v = (state0 or {}).get(s)
            h0.append(
                v.float().contiguous()
                if v is not None
                else torch.zeros(B, *(self.cell.sizes[a] for a in self.cell.states[s]), device=xs[0].device)
            )
        outs = self.op(xs, cs, h0)
        y, finals = outs[0], outs[1 : 1 + len(h0)]
        return y, dict(zip(self.state_names, finals))

    @functools.cached_property
    def op(self):
        """The cell as a ``torch.library`` custom op (so torch.compile keeps it as one node)."""
        return _register_op(self)

    # ---- the module's launchers ----------------------------------------------------------------
    def forward(self, xs, cs, h0):
        launch = getattr(self.module, f"{self.stem}_fwd")
        outs = launch(*xs, *cs, *h0, chunk=self.plan.chunk, num_warps=self.plan.num_warps)
        n_s = len(h0)
        return outs[0], list(outs[1 : 1 + n_s]), list(outs[1 + n_s :])

    def backward(self, xs, cs, ck, dy, dht):
        launch = getattr(self.module, f"{self.stem}_bwd")
        grads = launch(*xs, *cs, *ck, dy, *dht, chunk=self.plan.chunk, num_warps=self.plan.num_warps)
        grads = list(grads) if isinstance(grads, tuple) else [grads]
        n_x, n_c = len(xs), len(cs)
        return grads[:n_x], grads[n_x : n_x + n_c], grads[n_x + n_c :]


def _block_numel(plan: Plan, axes) -> int:
    out = 1
    for a in axes:
        out *= plan.block[a]
    return out


def _ntiles(plan: Plan, axes) -> int:
    out = 1
    for a in axes:
        out *= plan.tiles[a]
    return out


_OPS: dict[str, object] = {}


def _register_op(cc: CompiledCell):
    """``archdsl::cell_<hash>(xs, cs, h0) -> [y, *final states, *checkpoints]`` with its autograd.

    An op is registered once per name: layers with the same IR and plan share it (the name covers
    the generated source and every launch setting, so they compute the same thing)."""
    name = f"archdsl::cell_{cc.hash}_{cc.plan.chunk}_{cc.plan.num_warps}_{cc.plan.n_tiles}"
    if name not in _OPS:
        _OPS[name] = _make_op(cc, name)
    return _OPS[name]


def _make_op(cc: CompiledCell, name: str):
    n_s = len(cc.state_names)
    cell = cc.cell

    @torch.library.custom_op(name, mutates_args=())
    def op(xs: list[torch.Tensor], cs: list[torch.Tensor], h0: list[torch.Tensor]) -> list[torch.Tensor]:
        y, ht, ck = cc.forward(xs, cs, h0)
        return [y, *ht, *ck]

    @op.register_fake
    def _(xs, cs, h0):
        B, T = xs[0].shape[:2]
        nc = -(-T // cc.plan.chunk)
        y = xs[0].new_empty(B, T, *(cell.sizes[a] for a in cell.output_axes))
        ht = [
            xs[0].new_empty(B, *(cell.sizes[a] for a in cell.states[s]), dtype=torch.float32)
            for s in cc.state_names
        ]
        ck = [
            xs[0].new_empty(B, nc, *(cell.sizes[a] for a in cell.states[s]), dtype=torch.float32)
            for s in cc.state_names
        ]
        return [y, *ht, *ck]

    def setup_context(ctx, inputs, output):
        xs, cs, _ = inputs
        ctx.n = (len(xs), len(cs))
        ctx.save_for_backward(*xs, *cs, *output[1 + n_s :])

    def backward(ctx, grads):
        n_x, n_c = ctx.n
        saved = ctx.saved_tensors
        xs, cs, ck = saved[:n_x], saved[n_x : n_x + n_c], saved[n_x + n_c :]
        dy, dht = grads[0], list(grads[1 : 1 + n_s])
        if dy is None:
            dy = xs[0].new_zeros(*xs[0].shape[:2], *(cell.sizes[a] for a in cell.output_axes))
        dht = [d if d is not None else torch.zeros_like(c[:, 0]) for d, c in zip(dht, ck)]
        grads = bwd_op(list(xs), list(cs), list(ck), dy, dht)
        return grads[:n_x], grads[n_x : n_x + n_c], grads[n_x + n_c :]

    bwd_op = _register_bwd_op(cc, name)
    op.register_autograd(backward, setup_context=setup_context)
    return op


def _register_bwd_op(cc: CompiledCell, name: str):
    """The backward as its own custom op, so that tracing the backward never launches a kernel."""

    @torch.library.custom_op(name + "_bwd", mutates_args=())
    def bwd(
        xs: list[torch.Tensor],
        cs: list[torch.Tensor],
        ck: list[torch.Tensor],
        dy: torch.Tensor,
        dht: list[torch.Tensor],
    ) -> list[torch.Tensor]:
        dxs, dcs, dh0 = cc.backward(xs, cs, ck, dy, dht)
        return [*dxs, *dcs, *dh0]

    @bwd.register_fake
    def _(xs, cs, ck, dy, dht):
        return [
            *(torch.empty_like(x) for x in xs),
            *(torch.empty_like(c) for c in cs),
            *(torch.empty_like(d, dtype=torch.float32) for d in dht),
        ]

    return bwd


class ParallelPart:
    """A stateless per-token computation (codegen/hoist.py) as two kernels of the generated module,
    ``<kind>_fwd_kernel`` and ``<kind>_bwd_kernel``, and a ``torch.library`` custom op with autograd."""

    def __init__(self, kind: str, part, plan: Plan, module, digest: str, stem: str):
        self.kind, self.part, self.plan, self.module, self.hash = kind, part, plan, module, digest
        self.stem = stem
        self.input_names, self.const_names = list(part.inputs), list(part.consts)

    def __call__(self, inputs: dict, frontier) -> list:
        xs = [inputs[n].contiguous() for n in self.input_names]
        cs = [frontier[self.part.const_source[c]].contiguous() for c in self.const_names]
        return self.op(xs, cs)

    @functools.cached_property
    def op(self):
        name = f"archdsl::{self.kind}_{self.hash}_{self.plan.chunk}_{self.plan.num_warps}"
        if name not in _OPS:
            _OPS[name] = _make_part_op(self, name)
        return _OPS[name]

    def shapes(self, x):
        B, T = x.shape[:2]
        return [(B, T, *(self.part.sizes[a] for a in self.part.output_axes(o))) for o in self.part.outputs]

    def dtype(self, x):
        return torch.float32  # outputs stay fp32: the loop or the caller reads them

    # ---- the module's launchers ----------------------------------------------------------------
    def forward(self, xs, cs):
        launch = getattr(self.module, f"{self.stem}_{self.kind}_fwd")
        outs = launch(*xs, *cs, chunk=self.plan.chunk, num_warps=self.plan.num_warps)
        return list(outs) if isinstance(outs, tuple) else [outs]

    def backward(self, xs, cs, douts):
        launch = getattr(self.module, f"{self.stem}_{self.kind}_bwd")
        grads = launch(*xs, *cs, *douts, chunk=self.plan.chunk, num_warps=self.plan.num_warps)
        grads = list(grads) if isinstance(grads, tuple) else [grads]
        return grads[: len(xs)], grads[len(xs) :]


def _make_part_op(pp: ParallelPart, name: str):
    @torch.library.custom_op(name, mutates_args=())
    def op(xs: list[torch.Tensor], cs: list[torch.Tensor]) -> list[torch.Tensor]:
        return pp.forward(xs, cs)

    @op.register_fake
    def _(xs, cs):
        return [xs[0].new_empty(s, dtype=pp.dtype(xs[0])) for s in pp.shapes(xs[0])]

    @torch.library.custom_op(name + "_bwd", mutates_args=())
    def bwd(xs: list[torch.Tensor], cs: list[torch.Tensor], douts: list[torch.Tensor]) -> list[torch.Tensor]:
        dxs, dcs = pp.backward(xs, cs, douts)
        return [*dxs, *dcs]

    @bwd.register_fake
    def _(xs, cs, douts):
        return [*(torch.empty_like(x) for x in xs), *(torch.empty_like(c) for c in cs)]

    def setup_context(ctx, inputs, output):
        xs, cs = inputs
        ctx.n = len(xs)
        ctx.save_for_backward(*xs, *cs)

    def backward(ctx, grads):
        saved = ctx.saved_tensors
        xs, cs = list(saved[: ctx.n]), list(saved[ctx.n :])
        douts = [
            g if g is not None else xs[0].new_zeros(s, dtype=pp.dtype(xs[0]))
            for g, s in zip(grads, pp.shapes(xs[0]))
        ]
        out = bwd(xs, cs, douts)
        return out[: ctx.n], out[ctx.n :]

    op.register_autograd(backward, setup_context=setup_context)
    return op


class HoistedCell:
    """A compiled cell with parts of its step in parallel kernels around the loop (codegen/hoist.py):
    the per-token values the loop reads (``token``, computed before it, fp32) and the readout after it
    (``readout``, from the value the loop hands it). Either may be None."""

    def __init__(
        self, core: CompiledCell, cell: Cell, token: ParallelPart | None, readout: ParallelPart | None
    ):
        self.core, self.cell, self.token, self.readout = core, cell, token, readout
        self.plan, self.module, self.hash, self.path = core.plan, core.module, core.hash, core.path
        self.strategy = core.strategy
        self.hoisted = (
            [f"{o}[{', '.join(token.part.output_axes(o))}]" for o in token.part.outputs] if token else []
        )
        # the loop's value the readout reads: its one input that is not a per-token input of the cell
        self.readout_input = (
            next((n for n in readout.part.inputs if n not in cell.inputs), None) if readout else None
        )

    def describe(self) -> list[tuple[str, str]]:
        lines = self.core.describe()
        if self.readout is not None:
            axes = ", ".join(self.readout.part.inputs[self.readout_input])
            lines.insert(
                1, ("readout", f"y from {self.readout_input}[{axes}] in parallel kernels after the loop")
            )
        if self.hoisted:
            lines.insert(
                1, ("per-token", f"{' '.join(self.hoisted)} computed in parallel kernels, read by the loop")
            )
        return lines

    def __call__(self, inputs, frontier, state0=None):
        values = dict(inputs)
        if self.token is not None:
            values.update(zip(self.token.part.outputs, self.token(inputs, frontier)))
        y, final = self.core({n: values[n] for n in self.core.input_names}, frontier, state0)
        if self.readout is not None:
            (y,) = self.readout({**inputs, self.readout_input: y}, frontier)
        return y.to(next(iter(inputs.values())).dtype), final
