"""The oracle's weight tables checked on the CPU, before a GPU run: each spec (reference interpreter)
against its library layer (its Triton kernels under ``TRITON_INTERPRET=1``) at tiny sizes, fp32.

    TRITON_INTERPRET=1 python benchmarks/oracle_cpu.py [--specs gla,mamba] [--T 6]

The libraries assume a CUDA device in a few places; for this check only, their autotuners keep their
first configuration (there is no device to time candidates on), ``torch.cuda.device`` is a no-op and the
device's multiprocessor count is 2. Mamba-1 runs mamba_ssm's pure-torch reference scan. Prints one line
per spec: the relative RMS error of the output and of every gradient, or why it could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import types
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import oracle  # noqa: E402
import oracle_env  # noqa: E402
from oracle_maps import LAYERS, VIEWS  # noqa: E402

from archdsl.lang.checker import instantiate  # noqa: E402
from archdsl.lang.parser import parse_file  # noqa: E402
from archdsl.layer import RecurrentLayer  # noqa: E402

#: tiny sizes the libraries' kernels accept (head dims of 16 for tl.dot)
SETS = {
    "gdn": {"dim": 32, "heads": 2, "n": 16},
    "mamba2": {"dim": 32, "headdim": 16, "dstate": 16},
    "gla": {"dim": 64, "heads": 2, "rank": 4},
    "deltanet": {"dim": 32, "heads": 2, "n": 16},
    "hgrn2": {"dim": 32, "expand": 16},
    "mamba": {"dim": 16, "dstate": 4},
    "kda": {"dim": 32, "heads": 2, "n": 16},
    "gated_deltaproduct": {"dim": 32, "heads": 2, "n": 16},
    "rwkv6": {"dim": 64, "heads": 2, "rank": 4, "rank_w": 8},
    "rwkv7": {"dim": 32, "n": 16, "rank_w": 8, "rank_a": 8, "rank_g": 8},
    "retnet": {"dim": 32, "heads": 2},
}


def cpu_patches() -> None:
    oracle_env.first_config()
    torch.cuda.device = lambda *a, **k: contextlib.nullcontext()
    torch.cuda.get_device_properties = lambda *a, **k: types.SimpleNamespace(multi_processor_count=2)


def cpu_standins() -> None:
    """Where a layer's chunked kernel cannot run under the interpreter (its loop counters are Python
    ints there), the layer calls the library's own pure-torch reference of the same op: RWKV-7's
    chunked DPLR kernel becomes fla's naive DPLR recurrence, RetNet's chunked retention fla's fused
    recurrent one. The GPU oracle runs the chunked kernels."""
    import fla.layers.rwkv7 as rwkv7
    from fla.ops.generalized_delta_rule.dplr.naive import dplr_recurrence

    def chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, **_):
        t = lambda z: z.transpose(1, 2)  # noqa: E731  [B, T, H, D] <-> [B, H, T, D]
        q = t(r) * scale * r.shape[-1] ** 0.5  # the naive recurrence scales q by 1/sqrt(K) itself
        o, s = dplr_recurrence(q, t(k), t(v), t(a), t(b), t(w), initial_state, output_final_state)
        return t(o), s

    rwkv7.chunk_rwkv7 = chunk_rwkv7
    import fla.layers.multiscale_retention as retention

    retention.chunk_retention = retention.fused_recurrent_retention


def check(spec: str, T: int) -> dict[str, float]:
    _, preset, build, rows = LAYERS[spec]
    ir = instantiate(parse_file(ROOT / "specs" / f"{spec}.rnn"), preset, SETS[spec]).layer
    torch.manual_seed(0)
    ours = RecurrentLayer(ir, seed=0)
    with torch.no_grad():  # off the special initial values (ones, zeros), so every weight matters
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    lib = build(ir)
    oracle.copy_weights(ours, lib, rows, VIEWS.get(spec))
    x = torch.randn(1, T, ir.dim)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    y_ours, y_lib = ours(xs[0])[0], oracle.lib_forward(lib, xs[1])
    w = torch.randn_like(y_ours)
    (y_ours * w).sum().backward()
    (y_lib * w).sum().backward()
    errors = {"y": oracle.rel_rms(y_ours, y_lib), "dx": oracle.rel_rms(xs[0].grad, xs[1].grad)}
    named = dict(lib.named_parameters())
    for name, sources in rows:
        errors["d" + name] = oracle.rel_rms(
            oracle.gather(ours, sources, grad=True),
            oracle.in_spec_order(VIEWS.get(spec), name, named[name].grad).reshape(-1),
        )
    return errors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", default=",".join(LAYERS))
    ap.add_argument("--T", type=int, default=6, help="sequence length (default 6)")
    args = ap.parse_args(argv)
    cpu_patches()
    oracle.prepare_libraries()
    cpu_standins()
    failed = 0
    for spec in args.specs.split(","):
        try:
            errors = check(spec, args.T)
            print(
                f"{spec}: max {max(errors.values()):.1e}; "
                + " ".join(f"{k} {v:.1e}" for k, v in errors.items())
            )
        except Exception as e:  # recorded, and the next spec runs
            failed += 1
            print(f"{spec}: not run: {type(e).__name__}: {str(e)[:200]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
