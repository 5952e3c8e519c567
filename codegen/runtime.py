"""Compiled cells at run time: the generated module cached on disk under a hash of the IR, the
launchers, the ``torch.autograd.Function`` and a ``torch.library`` custom op."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import torch

from archdsl.autodiff import Backward, Cell

from .plan import Plan


def cache_dir() -> Path:
    root = os.environ.get("ARCHDSL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "archdsl")
    path = Path(root) / "kernels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_module(source: str, name: str):
    """Write ``source`` atomically under its hash and import it (Triton's @jit needs a real file)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    path = cache_dir() / f"{name}_{digest}.py"
    if not path.exists():
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

    def __init__(self, cell: Cell, bwd: Backward, plan: Plan, module, digest: str, path: Path):
        self.cell, self.bwd, self.plan = cell, bwd, plan
        self.module, self.hash, self.path = module, digest, path
        self.input_names = list(cell.inputs)
        self.const_names = list(cell.consts)
        self.state_names = list(cell.states)

    def __call__(self, inputs, frontier, state0=None):
        xs = [inputs[n].contiguous() for n in self.input_names]
        cs = [frontier[self.cell.const_source[c]].contiguous() for c in self.const_names]
        B = xs[0].shape[0]
        h0 = []
        for s in self.state_names:
            v = (state0 or {}).get(s)
            h0.append(v.float().contiguous() if v is not None else
                      torch.zeros(B, *(self.cell.sizes[a] for a in self.cell.states[s]), device=xs[0].device))
        outs = _CellFunction.apply(self, len(xs), len(cs), *xs, *cs, *h0)
        y, finals = outs[0], outs[1:]
        return y, dict(zip(self.state_names, finals))

    # ---- launchers -----------------------------------------------------------------------------
    def forward(self, xs, cs, h0):
        plan, cell = self.plan, self.cell
        B, T = xs[0].shape[:2]
        dev = xs[0].device
        nc = -(-T // plan.chunk)
        y = torch.empty(B, T, *(cell.sizes[a] for a in cell.output_axes), device=dev, dtype=xs[0].dtype)
        ht = [torch.empty(B, *(cell.sizes[a] for a in cell.states[s]), device=dev) for s in self.state_names]
        ck = [torch.empty(B, nc, *(cell.sizes[a] for a in cell.states[s]), device=dev)
              for s in self.state_names]
        self.module.fwd_kernel[(B, plan.n_tiles)](*xs, *cs, *h0, y, *ht, *ck, T, USE_H0=True,
                                                   CHUNK=plan.chunk)
        return y, ht, ck

    def backward(self, xs, cs, ck, dy, dht):
        plan, cell = self.plan, self.cell
        B, T = xs[0].shape[:2]
        dev = xs[0].device
        from .triton import missing_split
        scr = [torch.empty(B * plan.n_tiles * plan.chunk * _block_numel(plan, cell.states[s]), device=dev)
               for s in self.state_names]
        dxs = []
        for n, x in zip(self.input_names, xs):
            nt = _ntiles(plan, missing_split(plan, cell.inputs[n]))
            dxs.append(torch.empty(B, T, nt, *x.shape[2:], device=dev))
        dcs = [torch.zeros(B * plan.n_tiles, *c.shape, device=dev) for c in cs]
        dh0 = [torch.empty(B, *(cell.sizes[a] for a in cell.states[s]), device=dev) for s in self.state_names]
        use_dht = any(d is not None for d in dht)
        dht = [d.float().contiguous() if d is not None else torch.zeros_like(h) for d, h in zip(dht, dh0)]
        self.module.bwd_kernel[(B, plan.n_tiles)](*xs, *cs, *ck, dy.contiguous(), *dht, *scr, *dxs, *dcs, *dh0,
                                                   T, USE_DHT=use_dht, CHUNK=plan.chunk)
        dxs = [d.sum(2).to(x.dtype) for d, x in zip(dxs, xs)]
        dcs = [d.sum(0).to(c.dtype) for d, c in zip(dcs, cs)]
        return dxs, dcs, dh0


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


class _CellFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, compiled: CompiledCell, n_x: int, n_c: int, *tensors):
        xs, cs, h0 = tensors[:n_x], tensors[n_x:n_x + n_c], tensors[n_x + n_c:]
        y, ht, ck = compiled.forward(xs, cs, h0)
        ctx.compiled, ctx.n = compiled, (n_x, n_c, len(h0))
        ctx.save_for_backward(*xs, *cs, *ck)
        return (y, *ht)

    @staticmethod
    def backward(ctx, dy, *dht):
        n_x, n_c, n_s = ctx.n
        saved = ctx.saved_tensors
        xs, cs, ck = saved[:n_x], saved[n_x:n_x + n_c], saved[n_x + n_c:]
        if dy is None:
            dy = torch.zeros(1, device=xs[0].device).expand(*xs[0].shape[:2],
                                                            *(ctx.compiled.cell.sizes[a]
                                                              for a in ctx.compiled.cell.output_axes))
        dxs, dcs, dh0 = ctx.compiled.backward(xs, cs, ck, dy, list(dht))
        return (None, None, None, *dxs, *dcs, *dh0)
