"""Decode latency per token on one GPU: archdsl's ``layer.step`` against the peers' one-step paths.

Two levels, each at batch 1 and 32 (``--batch``), bf16 weights and inputs, fp32 states:

- **layer**: one token through the whole layer (input projections, recurrence, readout, output
  projection). archdsl: ``RecurrentLayer.step`` (triton backend) for gdn.rnn at GDN_100m,
  mamba2.rnn at Mamba2_100m and e88.rnn at E88_d12h32. Peers: mamba_ssm's ``Mamba2.step`` (conv
  state + ``selective_state_update``) at Mamba2_100m's width, fla's ``GatedDeltaNet`` with a cache
  (one token runs its ``fused_recurrent`` kernel) at GDN_100m's width.
- **recurrence**: the state update and readout alone, inputs already projected. archdsl: the
  compiled cell on a length-1 sequence; fla: ``fused_recurrent_gated_delta_rule`` on one token (its
  l2norm in the kernel); mamba_ssm: ``selective_state_update``.

Each number is the median over ``--repeats`` runs of ``--tokens`` consecutive steps (the state
carried from step to step), after ``--warmup`` steps (compilation, autotuning), with a device sync
around each run. A peer that does not import or fails is reported with its reason, not dropped.

    python benchmarks/decode.py --out benchmarks/results/decode-h100.md
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
import traceback

import torch

CASES = {  # archdsl spec, preset, peer
    "gdn": ("specs/gdn.rnn", "GDN_100m", "fla GatedDeltaNet"),
    "mamba2": ("specs/mamba2.rnn", "Mamba2_100m", "mamba_ssm Mamba2"),
    "e88": ("specs/e88.rnn", "E88_d12h32", None),
}
DT = torch.bfloat16


def per_token_us(step, n_tokens: int, warmup: int, repeats: int) -> float:
    """Median microseconds per call of ``step()`` (which carries its own state)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n_tokens):
            step()
        torch.cuda.synchronize()
        runs.append((time.perf_counter() - start) / n_tokens * 1e6)
    return statistics.median(runs)


# ---- archdsl ---------------------------------------------------------------------------------------
def archdsl_layer(spec: str, preset: str):
    from archdsl.lang.checker import instantiate
    from archdsl.lang.parser import parse_file
    from archdsl.layer import RecurrentLayer

    ir = instantiate(parse_file(spec), preset).layer
    return RecurrentLayer(ir, backend="triton", seed=0).cuda().to(DT)


def archdsl_steps(layer, B: int):
    """(whole-layer step, recurrence-only step) closures carrying their state."""
    x = torch.randn(B, layer.ir.dim, device="cuda", dtype=DT)
    box = {"s": layer.init_state(B), "c": layer.init_state(B)}
    with torch.no_grad():
        values = layer.project(x[:, None])
        inputs = {n: values[n] for n in layer._inputs}
        frontier = layer.frontier_values()

    def whole():
        _, box["s"] = layer.step(x, box["s"])

    def cell():
        _, box["c"] = layer.cell(inputs, frontier, box["c"])

    return whole, cell


# ---- peers -----------------------------------------------------------------------------------------
def mamba_steps(dim: int, B: int):
    from archdsl.lm.baselines import import_mamba2

    Mamba2, _path = import_mamba2()
    m = Mamba2(d_model=dim, d_state=64, d_conv=4, expand=2, headdim=64, layer_idx=0).cuda().to(DT)
    conv, ssm = m.allocate_inference_cache(B, 1, dtype=DT)
    x = torch.randn(B, 1, dim, device="cuda", dtype=DT)

    def whole():
        m.step(x, conv, ssm)  # updates conv and ssm in place

    from mamba_ssm.ops.triton.selective_state_update import selective_state_update

    H, P, N = m.nheads, m.headdim, m.d_state
    state = torch.zeros(B, H, P, N, device="cuda", dtype=torch.float32)
    xs, z = (torch.randn(B, H, P, device="cuda", dtype=DT) for _ in range(2))
    dt = torch.randn(B, H, device="cuda", dtype=DT)[..., None].expand(B, H, P)
    Bm, Cm = (torch.randn(B, 1, N, device="cuda", dtype=DT) for _ in range(2))
    A = -torch.exp(m.A_log.float())[:, None, None].expand(H, P, N)
    D, dt_bias = m.D[:, None].expand(H, P), m.dt_bias[:, None].expand(H, P)

    def cell():
        selective_state_update(state, xs, dt, A, Bm, Cm, D, z=z, dt_bias=dt_bias, dt_softplus=True)

    return whole, cell


def fla_steps(dim: int, B: int):
    from fla.layers import GatedDeltaNet
    from fla.models.utils import Cache
    from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule

    hd = 128
    m = GatedDeltaNet(hidden_size=dim, head_dim=hd, num_heads=dim // hd, mode="chunk", layer_idx=0)
    m = m.cuda().to(DT).eval()
    x = torch.randn(B, 1, dim, device="cuda", dtype=DT)
    box = {"cache": Cache()}
    with torch.no_grad():
        m(x, past_key_values=box["cache"], use_cache=True)  # the cache's first entry

    def whole():
        m(x, past_key_values=box["cache"], use_cache=True)

    H = dim // hd
    q, k, v = (torch.randn(B, 1, H, hd, device="cuda", dtype=DT) for _ in range(3))
    g = -torch.rand(B, 1, H, device="cuda", dtype=torch.float32)
    beta = torch.rand(B, 1, H, device="cuda", dtype=DT)
    box["h"] = torch.zeros(B, H, hd, hd, device="cuda", dtype=torch.float32)

    def cell():
        _, box["h"] = fused_recurrent_gated_delta_rule(
            q=q, k=k, v=v, g=g, beta=beta, initial_state=box["h"], output_final_state=True,
            use_qk_l2norm_in_kernel=True,
        )  # fmt: skip

    return whole, cell


PEERS = {"fla GatedDeltaNet": fla_steps, "mamba_ssm Mamba2": mamba_steps}


def measure(name, make, args, rows):
    for B in args.batch:
        try:
            whole, cell = make(B)
            with torch.no_grad():
                w = per_token_us(whole, args.tokens, args.warmup, args.repeats)
                c = per_token_us(cell, args.tokens, args.warmup, args.repeats)
            rows.append((name, B, f"{w:.1f}", f"{c:.1f}", ""))
        except Exception as e:  # a peer that is missing or fails: say why, keep going
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            rows.append((name, B, "-", "-", f"{type(e).__name__}: {first}"))
            if args.verbose:
                traceback.print_exc()
        print(" | ".join(str(v) for v in rows[-1]), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--tokens", type=int, default=200, help="steps per timed run")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--out", help="write the table as Markdown here")
    p.add_argument("--verbose", action="store_true", help="print the traceback of a failing side")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: benchmarks/decode.py needs a CUDA GPU")
    torch.manual_seed(0)
    rows: list[tuple] = []
    for case in args.cases:
        spec, preset, peer = CASES[case]
        layer = None
        try:
            layer = archdsl_layer(spec, preset)
        except Exception as e:
            rows.append((f"archdsl {case} {preset}", "-", "-", "-", f"{type(e).__name__}: {e}"[:200]))
        if layer is not None:
            measure(f"archdsl {case} {preset}", lambda B, layer=layer: archdsl_steps(layer, B), args, rows)
        if peer is not None:
            dim = layer.ir.dim if layer is not None else {"gdn": 1024, "mamba2": 896}[case]
            measure(f"{peer} (dim {dim})", lambda B, f=PEERS[peer], dim=dim: f(dim, B), args, rows)
    write(args, rows)


def write(args, rows) -> None:
    import triton

    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        "# Decode latency per token",
        "",
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
        f"Python {platform.python_version()}, {now:%Y-%m-%d %H:%M} UTC.",
        f"bf16 weights and inputs, fp32 states; median of {args.repeats} runs of {args.tokens} steps "
        f"after {args.warmup} warm-up steps. `python benchmarks/decode.py` (see its docstring for what "
        "each column includes).",
        "",
        "| side | batch | layer step (µs/token) | recurrence step (µs/token) | note |",
        "|---|---:|---:|---:|---|",
        *(f"| {' | '.join(str(v) for v in r)} |" for r in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
