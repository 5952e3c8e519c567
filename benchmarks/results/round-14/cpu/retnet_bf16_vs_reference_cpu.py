"""RetNet_100m in bf16 on the CPU (Triton interpreter): archdsl's compiled layer (chunked) against its
own reference interpreter in bf16, and each against the reference in fp32 on the same bf16-rounded
weights and input, as benchmarks/oracle.py draws them (generic_weights, seeds 1 and 2).

    TRITON_INTERPRET=1 python retnet_bf16_vs_reference_cpu.py "" 2x100,2x128
    TRITON_INTERPRET=1 python retnet_bf16_vs_reference_cpu.py "dim=256,heads=2" 2x100
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tests"))
from kernel_harness import generic_weights  # noqa: E402

from archdsl.lang.checker import instantiate  # noqa: E402
from archdsl.lang.parser import parse_file  # noqa: E402
from archdsl.layer import RecurrentLayer  # noqa: E402


def rel(a, b):
    a, b = a.float().reshape(-1), b.float().reshape(-1)
    return ((a - b).pow(2).mean() / b.pow(2).mean()).sqrt().item()


def grads(m, x, w):
    x = x.clone().requires_grad_(True)
    y = m(x)[0]
    (y.float() * w).sum().backward()
    out = {"y": y.detach().float(), "dx": x.grad.float()}
    out.update({"d" + n: p.grad.float() for n, p in m.named_parameters()})
    return out


def copy_of(ir, src, backend, dtype):
    m = RecurrentLayer(ir, backend=backend, seed=0)
    m.load_state_dict(src.state_dict())
    return m.to(dtype)


def main():
    sets = {k: int(v) for k, v in (a.split("=") for a in sys.argv[1].split(","))} if sys.argv[1] else {}
    shapes = [tuple(map(int, s.split("x"))) for s in sys.argv[2].split(",")]
    ir = instantiate(parse_file(ROOT / "specs" / "retnet.rnn"), "RetNet_100m", sets).layer
    torch.manual_seed(0)
    ours = generic_weights(RecurrentLayer(ir, backend="triton", seed=0))
    for B, T in shapes:
        t0 = time.time()
        x = torch.randn(B, T, ir.dim, generator=torch.Generator().manual_seed(1))
        w = torch.randn(B, T, ir.dim, generator=torch.Generator().manual_seed(2))
        ref32 = copy_of(ir, ours, "reference", torch.float32)
        with torch.no_grad():
            for p in ref32.parameters():
                p.copy_(p.to(torch.bfloat16).float())
        exact = grads(ref32, x, w)
        got = grads(copy_of(ir, ours, "triton", torch.bfloat16), x.bfloat16(), w)
        ref = grads(copy_of(ir, ours, "reference", torch.bfloat16), x.bfloat16(), w)
        for name, a, b in (
            ("ours_vs_ref16", got, ref),
            ("ours_vs_fp32", got, exact),
            ("ref16_vs_fp32", ref, exact),
        ):
            e = {k: rel(a[k], b[k]) for k in b}
            worst = max(e, key=e.get)
            print(
                f"B{B} T{T} {name}: max {e[worst]:.3e} ({worst}) "
                + " ".join(f"{k} {v:.2e}" for k, v in e.items())
            )
        print(f"  {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
