"""An LM's training step against its layers: does the model run its layers as fast as they run alone?

For each model, builds the byte-level LM as ``archdsl train`` does (``build_model``, bf16 autocast,
fp32 weights) at a small depth, times one forward + backward of the LM and of its first layer alone
on the same batch shape, and prints torch.profiler's kernels of both, slowest first. An LM step much
slower than depth × layer points at the model path (a default the layer benchmarks do not take, a
copy, a cast); a kernel that dominates one profile and not the other names the culprit.

    python benchmarks/lm_layers.py --models gdn:1024:heads=8 specs/mamba2.rnn:896 --depth 4 > out.txt
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from archdsl.lm.config import ModelConfig
from archdsl.lm.zoo import build_model


def parse_model(text: str) -> tuple[str, int | None, dict]:
    """``NAME[:DIM[:K=V,…]]`` -> (name, dim, integer hyper settings); argparse's type for --models."""
    name, *rest = text.split(":")
    try:
        dim = int(rest[0]) if rest and rest[0] else None
        pairs = [kv.split("=") for kv in rest[1].split(",")] if len(rest) > 1 else []
        sets = {k: int(v) for k, v in pairs}
    except ValueError:
        found = f"found '{text}'"
        raise argparse.ArgumentTypeError(f"expected NAME[:DIM[:K=V,…]] with integers, {found}") from None
    return name, dim, sets


def model_arg(text: str) -> str:
    """--models' type: ``text`` once ``parse_model`` reads it (a bad one is argparse's one-line error)."""
    parse_model(text)
    return text


def ms_per_call(fn, reps: int = 5) -> float:
    for _ in range(2):  # compiles and tunes
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def kernels(fn, label: str, rows: int) -> str:
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as p:
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
    table = p.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70)
    return f"## profile {label} (2 calls)\n{table}"


def compare(model: str, depth: int, B: int, T: int, rows: int) -> None:
    name, dim, sets = parse_model(model)
    lm = build_model(ModelConfig(model=name, sets=sets, dim=dim, depth=depth, backend="triton")).cuda()
    idx = torch.randint(0, 256, (B, T), device="cuda")
    layer = lm.mixers[0].layer  # TakeFirst(RecurrentLayer)
    x = torch.randn(B, T, layer.ir.dim, device="cuda", requires_grad=True)

    def lm_step():
        with torch.autocast("cuda", torch.bfloat16):
            logits = lm(idx)
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, 256), idx.reshape(-1))
        loss.backward()

    def layer_step():
        with torch.autocast("cuda", torch.bfloat16):
            y = layer(x)[0]
        y.float().sum().backward()

    lm_ms, layer_ms = ms_per_call(lm_step), ms_per_call(layer_step)
    print(f"# {model}: LM depth {depth} step {lm_ms:.2f} ms; one layer fwd+bwd {layer_ms:.2f} ms", flush=True)
    print(kernels(lm_step, f"{model} LM depth {depth}", rows))
    print(kernels(layer_step, f"{model} layer", rows), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models", nargs="+", required=True, type=model_arg, help="NAME[:DIM[:K=V,…]] (a spec or a baseline)"
    )
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--rows", type=int, default=25, help="kernels per profile")
    args = ap.parse_args()
    print(f"# {torch.cuda.get_device_name()}; torch {torch.__version__}; B {args.batch}, T {args.seq}")
    for model in args.models:
        compare(model, args.depth, args.batch, args.seq, args.rows)


if __name__ == "__main__":
    main()
