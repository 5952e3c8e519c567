"""Which kernels' TF32 products move gdn's bf16 A_log gradient (CPU interpreter, TF32 emulated).

Runs the kernel harness' gdn bf16 case with ``LAUNCH["tf32_emulated"]`` on, and in each variant the
named kernels' "tf32" products exact (their launches' ``DOT`` set back to "tf32", which the
interpreter multiplies exactly):

    TRITON_INTERPRET=1 python where_tf32.py T CHUNK SEEDS VARIANT...   (SEEDS: 0,1,2; VARIANT: none,
    all, or kernel names joined by +: dmat dqkab dstates dqa dr prep states output)
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

import kernel_harness as kh  # noqa: E402
import torch  # noqa: E402
from archdsl.codegen.run import chunked_backward, chunked_dqk, chunked_kernels  # noqa: E402
from archdsl.codegen.run import chunked_common as cc  # noqa: E402
from test_chunked import layer_of  # noqa: E402

kh.assert_close = lambda name, a, b, tol: kh.rel_rms(a, b)
cc.LAUNCH["tf32_emulated"] = True
MODULES = {
    "dmat": (chunked_dqk, "chunk_dmat_kernel"),
    "dqkab": (chunked_dqk, "chunk_dqkab_kernel"),
    "dstates": (chunked_backward, "chunk_dstates_kernel"),
    "dqa": (chunked_backward, "chunk_dqa_kernel"),
    "dr": (chunked_backward, "chunk_dr_kernel"),
    "prep": (chunked_kernels, "chunk_prep_kernel"),
    "states": (chunked_kernels, "chunk_states_kernel"),
    "output": (chunked_kernels, "chunk_output_kernel"),
}
ORIGINAL = {n: getattr(m, a) for n, (m, a) in MODULES.items()}


class Exact:
    """A kernel whose launches multiply "tf32" products exactly (not emulated)."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kw):
            if kw.get("DOT") == "tf32-emulated":
                kw["DOT"] = "tf32"
            return launch(*args, **kw)

        return run


T, chunk, seeds, *variants = sys.argv[1:]
for variant in variants:
    for n, (module, attr) in MODULES.items():
        exact = variant == "all" or n in variant.split("+")
        setattr(module, attr, Exact(ORIGINAL[n]) if exact else ORIGINAL[n])
    for seed in (int(s) for s in seeds.split(",")):
        case = dict(B=2, T=int(T), dtype=torch.bfloat16, seed=seed, chunk=int(chunk), strategy="chunked")
        e = kh.compare_backends(layer_of("gdn"), **case)
        worst = max(e, key=e.get)
        print(f"gdn T {T} C {chunk} exact={variant} seed {seed}: A_log {e['dparams.A_log']:.2e}", end=" ")
        print(f"dt_bias {e['dparams.dt_bias']:.2e} worst {worst} {e[worst]:.2e}", flush=True)
