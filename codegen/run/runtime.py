"""Compiled cells at run time: the generated module cached on disk under a hash of its source, and
the launchers that the ``torch.library`` custom ops of ``codegen/run/ops.py`` call (PyTorch and
``torch.compile`` call the cells through those ops)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import torch
from archdsl.codegen.emit.fused import keeps_history, kept_values
from archdsl.codegen.plan import Plan
from archdsl.codegen.run.cachedir import cache_dir
from archdsl.codegen.run.ops import loop_op, part_op
from archdsl.codegen.run.progress import progress

from archdsl.autodiff import Backward, Cell
from archdsl.recompute import recomputable


def load_module(source: str, name: str, label: str | None = None):
    """Write ``source`` atomically under its hash and import it (Triton's @jit needs a real file).

    A file already in the cache is imported only if it holds exactly ``source`` (the text its name's
    hash stands for); anything else there (a damaged or planted file) is replaced first. A new file
    prints a progress line naming ``label`` (codegen/run/progress.py)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    path = cache_dir() / f"{name}_{digest}.py"
    try:
        intact = path.read_bytes() == source.encode()
    except OSError:  # missing (or unreadable: rewritten below)
        intact = False
    if not intact:
        if label is not None:
            progress(f"compiling {label}: new kernels in {path}; Triton compiles them on first launch")
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
        stride = info["checkpoint_stride"]
        checkpoints = (
            "every step's state kept by the forward (the backward recomputes nothing)"
            if keeps_history(self.plan)
            else f"every {stride} steps (backward recomputes each segment once)"
        )
        return [
            ("grid", f"{info['grid']} programs; split axes {split}; blocks {info['blocks']}"),
            ("state/program", f"{info['state_bytes_per_program']:,} bytes in registers (fp32)"),
            ("checkpoints", checkpoints),
            ("warps", str(info["num_warps"])),
        ]

    def saved_shapes(self, B: int, T: int) -> list[tuple]:
        """The shapes of what the forward keeps for the backward (``fused.saved_names``): each
        state's checkpoints, or with ``chunk=1`` each state's and kept value's flat history."""
        plan, cell = self.plan, self.cell
        if not keeps_history(plan):
            nc = -(-T // plan.chunk)
            return [(B, nc, *(cell.sizes[a] for a in ax)) for ax in cell.states.values()]
        tiles = B * plan.n_tiles
        out = [(tiles * (T + 1) * _block_numel(plan, ax),) for ax in cell.states.values()]
        kept = kept_values(cell, self.bwd, plan)
        return out + [(tiles * T * _block_numel(plan, cell.graph[i].axes),) for i in kept]

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
        return loop_op(self)

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


def token_strided(x: torch.Tensor) -> torch.Tensor:
    """``x`` [B, T, …] as the per-token kernels read it: at any batch and token strides, each token's
    elements compact (row-major); a copy only where they are not. A slice of a projection's output
    (GDN's gate ``g``: its tokens a projection's width apart) is read where it lies: the copy it took
    before was 41 µs a launch, two a GDN_100m forward+backward on an H200 (round-20 call 2)."""
    if x.dim() < 2:
        return x.contiguous()
    step = 1
    for size, stride in reversed(list(zip(x.shape[2:], x.stride()[2:]))):
        if size != 1 and stride != step:
            return x.contiguous()
        step *= size
    return x


class ParallelPart:
    """A stateless per-token computation (codegen/hoist.py) as two kernels of the generated module,
    ``<kind>_fwd_kernel`` and ``<kind>_bwd_kernel``, and a ``torch.library`` custom op with autograd.
    Its outputs are fp32, those named in ``narrow`` in the inputs' 16-bit type where one of them has
    one (``dtypes``; rounded once, from fp32 sums): a readout's ``y``, and the chunked strategy's
    coefficients where its kernels multiply them in that type (``chunked._narrow``)."""

    def __init__(
        self, kind: str, part, plan: Plan, module, digest: str, stem: str, narrow: frozenset = frozenset()
    ):
        self.kind, self.part, self.plan, self.module, self.hash = kind, part, plan, module, digest
        self.stem, self.narrow = stem, narrow
        self.input_names, self.const_names = list(part.inputs), list(part.consts)

    def __call__(self, inputs: dict, frontier) -> list:
        xs = []
        for n in self.input_names:
            x = inputs[n]
            xs.append(token_strided(x))
            if xs[-1] is not x:  # a copy the op saves, made again
                recomputable(xs[-1:], lambda t: [t.contiguous()], [x])
        cs = [frontier[self.part.const_source[c]].contiguous() for c in self.const_names]
        outs = self.op(xs, cs)
        n = len(xs)  # the recipe keeps no tensor of its own (``recompute._detached``)
        recomputable(outs, lambda *a: self.forward(list(a[:n]), list(a[n:])), [*xs, *cs])
        return outs

    @functools.cached_property
    def op(self):
        return part_op(self)

    def shapes(self, x):
        B, T = x.shape[:2]
        return [(B, T, *(self.part.sizes[a] for a in self.part.output_axes(o))) for o in self.part.outputs]

    def dtypes(self, xs) -> list[torch.dtype]:
        """Each output's type: fp32, or for one in ``narrow`` the first 16-bit type among ``xs``."""
        half = next((x.dtype for x in xs if x.dtype in (torch.bfloat16, torch.float16)), torch.float32)
        return [half if o in self.narrow else torch.float32 for o in self.part.outputs]

    # ---- the module's launchers ----------------------------------------------------------------
    def forward(self, xs, cs):
        launch = getattr(self.module, f"{self.stem}_{self.kind}_fwd")
        outs = launch(*xs, *cs, self.dtypes(xs), chunk=self.plan.chunk, num_warps=self.plan.num_warps)
        return list(outs) if isinstance(outs, tuple) else [outs]

    def backward(self, xs, cs, douts):
        launch = getattr(self.module, f"{self.stem}_{self.kind}_bwd")
        grads = launch(*xs, *cs, *douts, chunk=self.plan.chunk, num_warps=self.plan.num_warps)
        grads = list(grads) if isinstance(grads, tuple) else [grads]
        return grads[: len(xs)], grads[len(xs) :]


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
