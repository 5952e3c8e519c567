"""The kernel harness' bf16 case of one spec on the CPU interpreter, with chosen chunked kernels' products
switched: ``EXACT=k1,k2`` runs them on TF32-cut fp32 operands in place of 16-bit ones, ``HALF=k1,k2``
on bf16-rounded operands in place of TF32/fp32 ones. Prints the three largest errors a draw (relative
RMS against the reference in bf16, ``tests/kernel_harness.compare_backends``).

    TRITON_INTERPRET=1 [EXACT=…] [HALF=…] python products_where.py SPEC N DIM T CHUNK SEEDS PRODUCTS \\
        [LAUNCH=V …]

e.g. ``gdn 3 16 130 16 0,1,2,3 half``, ``gdn 3 16 130 16 0,1,2,3 tf32 tf32_emulated=1`` with
``HALF=chunk_output_kernel``. Run from the checkout's root (it reads ``specs/`` and ``tests/``)."""

import os
import sys

sys.path.insert(0, "tests")
import kernel_harness as kh  # noqa: E402
import torch  # noqa: E402
from archdsl.codegen.run import chunked_backward, chunked_common, chunked_dqk, chunked_kernels  # noqa: E402

from archdsl.lang.checker import instantiate  # noqa: E402
from archdsl.lang.parser import parse_file  # noqa: E402

MODULES = (chunked_backward, chunked_dqk, chunked_kernels)


class Switch:
    """A kernel whose launches with a product type in ``old`` run with ``new`` instead."""

    def __init__(self, kernel, old: tuple, new: str):
        self.kernel, self.old, self.new = kernel, old, new

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            if kwargs.get("DOT") in self.old:
                kwargs["DOT"] = self.new
            return self.kernel[grid](*args, **kwargs)

        return launch


def switch(names: str, old: tuple, new: str) -> None:
    for name in filter(None, names.split(",")):
        for mod in MODULES:
            if hasattr(mod, name):
                setattr(mod, name, Switch(getattr(mod, name), old, new))


switch(os.environ.get("EXACT", ""), ("bf16", "fp16", "bf16-emulated"), "tf32-emulated")
switch(os.environ.get("HALF", ""), ("tf32", "ieee", "tf32-emulated"), "bf16-emulated")
kh.assert_close = lambda name, a, b, tol: kh.rel_rms(a, b)  # report, do not stop at the first
spec, n, dim, T, chunk, seeds, products, *items = sys.argv[1:]
for item in items:
    key, _, value = item.partition("=")
    chunked_common.LAUNCH[key] = int(value)
layer = instantiate(parse_file(f"specs/{spec}.rnn"), "test", {"heads": 2, "n": int(n), "dim": int(dim)}).layer
for seed in [int(s) for s in seeds.split(",")]:
    e = kh.compare_backends(
        layer, B=2, T=int(T), dtype=torch.bfloat16, seed=seed, chunk=int(chunk), device="cpu",
        strategy="chunked", products=products,
    )  # fmt: skip
    worst = sorted(e.items(), key=lambda kv: -kv[1])[:3]
    print(
        spec,
        "n",
        n,
        "dim",
        dim,
        "T",
        T,
        "C",
        chunk,
        products,
        items,
        "seed",
        seed,
        [(k, f"{v:.2e}") for k, v in worst],
    )
