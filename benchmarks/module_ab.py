"""A/B of generated modules in one process: each file is a module written by `archdsl compile`
(E88 or E75, any plan, any version of the code generator), imported on its own and timed through its
public function, forward and forward+backward, B 32, T 512, bf16 inputs, best of three interleaved
rounds. Files are named ``<label>_<spec>_<plan>.py`` (``base_e88_t16w2.py``); the first file of each
spec and shape is the one the others' outputs and gradients are compared with.

    python benchmarks/module_ab.py base_e88_t16w2.py change_e88_t16w2.py …
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys

import torch
from triton.testing import do_bench

B, T, DEV = 32, 512, "cuda"


def load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inputs(module, spec: str):
    """(per-token inputs in bf16, parameter values, dy) for the module's public function."""
    g = torch.Generator(device=DEV).manual_seed(0)
    H, I, J = module.H, module.I, module.J

    def r(*shape):
        return torch.randn(*shape, device=DEV, generator=g)

    if spec == "e75":  # bl, k, v, q; b_beta
        xs = [r(B, T, H, J), r(B, T, H, I), r(B, T, H, J), r(B, T, H, I)]
        cs = [torch.full((H, J), 2.0, device=DEV)]
    else:  # e88: a, k, v, q (and g with a gate); c0 = -exp(A_log), dt_bias
        xs = [r(B, T, H), r(B, T, H, I), r(B, T, H, J), r(B, T, H, I)]
        if "g" in inspect.signature(getattr(module, spec)).parameters:
            xs.append(r(B, T, H, J))
        cs = [-torch.rand(H, device=DEV, generator=g) * 4, torch.rand(H, device=DEV, generator=g) * -3]
    return [x.bfloat16() for x in xs], cs, r(B, T, H, J).bfloat16()


def rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / (b.float().norm() + 1e-30)).item()


def main():
    runs, first = {}, {}
    for path in sys.argv[1:]:
        label = os.path.basename(path)[:-3]
        spec = label.split("_")[1]
        module = load(path)
        fn = getattr(module, spec)
        xs, cs, dy = inputs(module, spec)
        xg = [x.clone().requires_grad_(True) for x in xs]
        cg = [c.clone().requires_grad_(True) for c in cs]
        y, _ = fn(*xg, *cg)
        out = [y, *torch.autograd.grad(y, [*xg, *cg], dy)]
        key = (spec, module.H, module.I, module.J)  # a shape's modules are compared with its first
        first.setdefault(key, out)
        err = max(rel(a, b) for a, b in zip(out, first[key]))
        runs[label] = (fn, xs, cs, xg, cg, dy, err, [])
    for _ in range(3):
        for fn, xs, cs, xg, cg, dy, _, times in runs.values():

            def fwdbwd(fn=fn, xg=xg, cg=cg, dy=dy):
                y, _ = fn(*xg, *cg)
                torch.autograd.grad(y, [*xg, *cg], dy)

            fwd = do_bench(lambda fn=fn, xs=xs, cs=cs: fn(*xs, *cs), warmup=5, rep=40)
            times.append((fwd, do_bench(fwdbwd, warmup=5, rep=40)))
    print(torch.cuda.get_device_name(), torch.__version__)
    print("| module | fwd ms | fwd+bwd ms | max rel err vs first of its shape |")
    print("|---|---|---|---|")
    for label, (*_, err, times) in runs.items():
        fwd, both = min(t[0] for t in times), min(t[1] for t in times)
        print(f"| {label} | {fwd:.3f} | {both:.3f} | {err:.1e} |", flush=True)


if __name__ == "__main__":
    main()
