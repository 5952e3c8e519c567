"""Every Triton launch of one layer's first forward + backward at a spec's ``--params`` width, under
the Triton interpreter on the CPU: kernel, file, argument types with Triton's specialisation (``D``:
divisible by 16; an integer 1 is a constant), constexprs and launch options, written as JSON.

    python record_launches.py SPEC OUT.json [B T] ['{"heads": 9}']

A "dim" among the settings fixes the width instead of solving it for 100M parameters.
"""

import inspect
import json
import os
import sys
import time
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
import torch
from triton.backends.compiler import BaseBackend
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import native_specialize_impl

spec, out = sys.argv[1], sys.argv[2]
B, T = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (1, 64)
sets = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
launches = []
original = InterpretedFunction.run


def run(self, *args, grid, warmup, **kwargs):
    fn, names = self.fn, self.arg_names
    params = inspect.signature(fn).parameters
    bound = dict(zip(names, args)) | {k: v for k, v in kwargs.items() if k in names}
    sig, cx = {}, {}
    for n, v in bound.items():
        if "constexpr" in str(params[n].annotation) or isinstance(v, (str, bool, float)) or v is None:
            cx[n] = v
        else:
            t, d = native_specialize_impl(BaseBackend, v, False, True, True)
            if t == "constexpr":
                cx[n] = d
            else:
                sig[n] = [t, d]
    opts = {k: v for k, v in kwargs.items() if k not in names}
    launches.append(
        {"file": fn.__code__.co_filename, "module": fn.__module__, "name": fn.__name__, "sig": sig, "cx": cx,
         "opts": opts}
    )  # fmt: skip
    return original(self, *args, grid=grid, warmup=warmup, **kwargs)


InterpretedFunction.run = run
from archdsl.layer import RecurrentLayer  # noqa: E402
from archdsl.lm.budget import solve, spec_layer  # noqa: E402
from archdsl.lm.model import ModelConfig  # noqa: E402

dim = sets.pop("dim", None)
cfg0 = ModelConfig(model=spec, backend="triton", sets=sets)
ir = spec_layer(cfg0, dim=dim) if dim else spec_layer(solve(cfg0, "100M", cfg0.tolerance))
layer = RecurrentLayer(ir, backend="triton")
x = torch.randn(B, T, ir.dim, requires_grad=True)
t0 = time.time()
with torch.autocast("cpu", dtype=torch.bfloat16):
    y = layer(x)[0]
y.float().sum().backward()
print(f"{spec} {sets} dim {ir.dim}: {len(launches)} launches ({time.time() - t0:.0f} s interpreted)")
Path(out).write_text(json.dumps(launches, indent=0))
