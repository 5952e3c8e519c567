"""Round 13's rwkv6 A/B (calls 3 and 4): one ``archdsl.Layer`` at RWKV6_100m, B 8 x T 512, timed by
``benchmarks/ab_layers.time_layer``; with a third argument, also a profile of three forward +
backward. Run from a folder holding ``bench/`` (a copy of benchmarks/): see ``run.sh``."""

import json
import os
import sys

sys.path.insert(0, "bench")
import torch  # noqa: E402
from ab_layers import time_layer  # noqa: E402

spec, label = sys.argv[1], sys.argv[2]
r = time_layer(spec, "RWKV6_100m", 8, 512)
r.update(label=label, recompute=os.environ.get("ARCHDSL_RECOMPUTE", "1"))
print(json.dumps(r))
if len(sys.argv) > 3:
    import archdsl

    layer = archdsl.Layer(spec, preset="RWKV6_100m", backend="triton", seed=0).cuda()
    x = torch.randn(8, 512, layer.ir.dim, device="cuda", requires_grad=True)

    def fb():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = layer(x)[0]
        y.float().sum().backward()

    for _ in range(3):
        fb()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as p:
        for _ in range(3):
            fb()
        torch.cuda.synchronize()
    print(p.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=70))
