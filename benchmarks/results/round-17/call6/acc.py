"""gdn bf16 at chunks of 64 on the GPU against the reference (chunked_check's case), by variant."""

import sys

sys.path.insert(0, "tests")
import torch
from archdsl.codegen.run import chunked_common
from kernel_harness import compare_backends

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file

for item in sys.argv[1:]:
    key, _, value = item.partition("=")
    chunked_common.LAUNCH[key] = int(value)
layer = instantiate(parse_file("specs/gdn.rnn"), "test", {"heads": 3}).layer
for chunk in (64,):
    try:
        errs = compare_backends(
            layer, B=2, T=130, dtype=torch.bfloat16, chunk=chunk, device="cuda", strategy="chunked"
        )
        worst, a_log = max(errs.values()), errs.get("dparams.A_log")
        print(sys.argv[1:], chunk, "worst", f"{worst:.2e}", "A_log", f"{a_log:.2e}", flush=True)
    except AssertionError as e:
        print(sys.argv[1:], chunk, "FAILED", str(e).splitlines()[0], flush=True)
