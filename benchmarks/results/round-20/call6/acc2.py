"""gdn (and e88 identity) bf16 on the GPU against the reference, T 130, chunks of 64, seeds 0-3,
by LAUNCH variant (as run in call 1; reformatted for the linter)."""

import sys

sys.path.insert(0, "tests")
import kernel_harness as kh
import torch
from archdsl.codegen.run import chunked_common
from kernel_harness import compare_backends

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file

kh.assert_close = lambda name, a, b, tol: kh.rel_rms(a, b)
name, seeds, *items = sys.argv[1:]
for item in items:
    key, _, value = item.partition("=")
    chunked_common.LAUNCH[key] = int(value)
args = {"heads": 3} if name == "gdn" else {"nonlin": "identity"}
layer = instantiate(parse_file(f"specs/{name}.rnn"), "test", args).layer
for seed in range(int(seeds)):
    e = compare_backends(
        layer, B=2, T=130, dtype=torch.bfloat16, seed=seed, chunk=64, device="cuda", strategy="chunked"
    )
    w = max(e.items(), key=lambda kv: kv[1])
    print(
        name,
        items,
        "seed",
        seed,
        "A_log {:.2e}".format(e["dparams.A_log"]),
        "dt_bias {:.2e}".format(e["dparams.dt_bias"]),
        "worst",
        w[0],
        f"{w[1]:.2e}",
        flush=True,
    )
