"""Round 13, CPU: a spec's layer in bf16 (reference backend) against fla's layer in bf16, fla's
recurrent kernel run under the Triton interpreter with fp32 inside (its bf16 path gives NaN there),
so the layers' own roundings are what differs. Run from the repository root with fla on the path:

    FULL=1 python benchmarks/results/round-13/cpu/bf16_vs_fla_cpu.py rwkv6 SPEC_FILE 100 [old]

(``old``: the weight table of the spec before round 13; FULL=1: the 100M preset.)"""

import os
import sys
import time

os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, "benchmarks")
sys.path.insert(0, "tests")
import oracle
import oracle_cpu
import torch
from kernel_harness import generic_weights
from oracle_maps import LAYERS, VIEWS

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer

spec, specfile, T = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows_override = sys.argv[4] if len(sys.argv) > 4 else None
oracle.DEVICE = "cpu"
oracle_cpu.cpu_patches()
oracle.prepare_libraries()
oracle_cpu.cpu_standins()
import fla.layers.multiscale_retention as RN  # noqa: E402 (after the CPU patches)
import fla.layers.rwkv6 as R6  # noqa: E402


def fp32_inside(fn):
    def call(*args, **kw):
        dt = next(
            a.dtype for a in list(args) + list(kw.values()) if torch.is_tensor(a) and a.is_floating_point()
        )

        def f(a):
            return a.float() if torch.is_tensor(a) and a.is_floating_point() else a

        out = fn(*[f(a) for a in args], **{k: f(v) for k, v in kw.items()})
        if isinstance(out, tuple):
            return tuple(o.to(dt) if torch.is_tensor(o) and o is out[0] else o for o in out)
        return out.to(dt)

    return call


R6.fused_recurrent_rwkv6 = fp32_inside(R6.fused_recurrent_rwkv6)
R6.token_shift = fp32_inside(R6.token_shift)
RN.chunk_retention = fp32_inside(RN.chunk_retention)
_, preset, build, rows = LAYERS[spec]
if rows_override == "old":
    rows = [
        (n, ["mr", "mw", "mk", "mv", "mg"])
        if n == "x_proj.2.weight"
        else (n, ["bias:mr", "bias:mw", "bias:mk", "bias:mv", "bias:mg"])
        if n == "x_bias"
        else (n, s)
        for n, s in rows
    ]
sets = (
    {}
    if os.environ.get("FULL")
    else {"rwkv6": {"dim": 256, "heads": 2}, "retnet": {"dim": 256, "heads": 2}}[spec]
)
ir = instantiate(parse_file(specfile), preset, sets).layer
ours = generic_weights(RecurrentLayer(ir, seed=0))
lib = build(ir, "fused_recurrent" if spec == "rwkv6" else "chunk")
oracle.copy_weights(ours, lib, rows, VIEWS.get(spec))
t0 = time.time()
truth = None
r = oracle.compare(spec, ir, ours, lib, rows, 2, T, torch.bfloat16)
print(spec, specfile.split("/")[-1], T, f"max {r['max']:.2e} worst {r['worst']}", f"{time.time() - t0:.0f}s")
print("  ", {k: f"{v:.1e}" for k, v in r["errors"].items()})
x = torch.randn(2, T, ir.dim, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
print(
    "ours nan",
    ours.to(torch.bfloat16)(x)[0].isnan().any().item(),
    "lib nan",
    oracle.lib_forward(lib.to(torch.bfloat16), x).isnan().any().item(),
)
print("lib fp32 nan", oracle.lib_forward(lib.float(), x.float()).isnan().any().item())
