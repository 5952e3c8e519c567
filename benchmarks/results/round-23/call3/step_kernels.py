# the inline script of call 3's first invocation (run.sh before its "step kernels" part was dropped for
# the second invocation): where one decode step of GDN_100m spends its GPU time, fp32 and bf16 weights
import torch

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer

for dtype in (torch.float32, torch.bfloat16):
    ir = instantiate(parse_file("specs/gdn.rnn"), "GDN_100m").layer
    layer = RecurrentLayer(ir, backend="triton", seed=0).cuda().to(dtype).eval()
    x = torch.randn(1, 1024, device="cuda", dtype=dtype)
    s = layer.init_state(1)
    with torch.no_grad():
        for _ in range(6):
            _, s = layer.step(x, s)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                _, s = layer.step(x, s)
            torch.cuda.synchronize()
    print(dtype, "GPU ms a step:", sum(e.self_device_time_total for e in prof.key_averages()) / 3e3)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14))
