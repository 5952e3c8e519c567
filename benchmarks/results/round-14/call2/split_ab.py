"""retnet at RetNet_100m, B 8 x T 512, bf16: forward + backward with the split scores on and off
(``LinearForm.split_scores`` patched), alternating, CUDA-event medians.

    python split_ab.py specs/retnet.rnn
"""

import sys

import torch
from archdsl.codegen import linear

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer

ir = instantiate(parse_file(sys.argv[1]), "RetNet_100m", {}).layer
torch.manual_seed(0)
layer = RecurrentLayer(ir, backend="triton", seed=0).cuda().to(torch.bfloat16)
x = torch.randn(8, 512, ir.dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
on = linear.LinearForm.split_scores


def step():
    layer(x)[0].float().sum().backward()


def median(reps=30):
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[reps // 2]


res = {"on": [], "off": []}
for rnd in range(3):
    for mode in ("on", "off"):
        linear.LinearForm.split_scores = on if mode == "on" else property(lambda self: False)
        if rnd == 0:
            for _ in range(3):
                step()
            torch.cuda.synchronize()
        res[mode].append(median())
print({k: [round(v, 3) for v in vs] for k, vs in res.items()})
print("median on", sorted(res["on"])[1], "off", sorted(res["off"])[1])
