"""What a mamba2 layer keeps for its backward (benchmarks/saved_memory.py walks it): no more than
the math needs, and no value twice.

Each saved tensor is read as the backward keeps it (``SavedTensor.data``): a value that
archdsl/recompute.py remakes in the backward is kept as its recipe and holds no memory.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from saved_memory import build, kept, measure, table  # noqa: E402

SIZES = {"dim": 48, "expansion": 2, "headdim": 32, "dstate": 16}  # h 3, p 32, s 16: d 96
B, T, CHUNK = 2, 80, 64  # T is no other axis' size: a per-token tensor is the one [B, T, ...]


@pytest.fixture(scope="module")
def layer():
    return build("specs/mamba2.rnn", None, SIZES, strategy="chunked", chunk=CHUNK)


def _dtype(name: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_saved_bytes_per_token_within_the_math(layer, dtype):
    """Bytes per token a mamba2 layer saves, at most what its backward cannot do without. With e the
    bytes of the layer's type (2 under bf16 autocast, 4 in fp32), dim the model width, d = expansion ·
    dim inner channels, h heads of p, s the state size and C the chunk:

    - the input projection's input, for its weight's gradient: e · dim;
    - the projection's output z, x, B, C, dt_raw (the convolution's, silu(z)'s and softplus'
      gradients read them): e · (2d + 2s + h);
    - o, the scan's output, which the readout's gradient reads (fp32: ``chunked_common.o_dtype``):
      4 · d;
    - the chunks' start states (``store_dtype``: e), h · p · s per C tokens: e · d · s / C;
    - the readout's output, for the output projection's weight: e · d.

    Nothing else: the convolution's outputs x, B, C, the coefficients dt · x and -dt · exp(A_log),
    the readout's gz are elementwise functions of these (and of the parameters). Today's main saved
    2280 bytes/token under bf16 against a bound of 1174 (benchmarks/results/saved-memory/)."""
    e = 2 if dtype == "bf16" else 4
    sz = layer.ir.sizes
    dim, h, p, s = layer.ir.dim, sz["h"], sz["p"], sz["s"]
    d = h * p
    bound = e * dim + e * (2 * d + 2 * s + h) + 4 * d + e * d * s / CHUNK + e * d
    short, _ = measure(layer, B, T, _dtype(dtype), "cpu")
    long, _ = measure(layer, B, 2 * T, _dtype(dtype), "cpu")
    lines, per_token, _ = table(short, long, B * T)
    assert per_token <= bound, "\n".join([f"{per_token} bytes/token saved > {bound}:", *lines])


def _kept(layer, dtype) -> list[tuple[str, torch.Tensor]]:
    """(owner, tensor) of every tensor the backward keeps (recipes left out: they hold nothing)."""
    leaf = torch.randn(B, T, layer.ir.dim, requires_grad=True)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        # x made by an op, as a model's layers see it: autocast caches its casts of leaves only
        y, _ = layer(leaf * 1.0)
    return [(owner, data) for owner, data in kept(y) if isinstance(data, torch.Tensor)]


def _values(t: torch.Tensor) -> torch.Tensor:
    """Every value in ``t``'s storage (what saving ``t`` keeps alive), as fp64."""
    return torch.empty(0, dtype=t.dtype).set_(t.untyped_storage()).double()


@pytest.fixture(scope="module")
def gdn():
    """Two projections of x (GatedDeltaNet's q, k, v, g and its a, b)."""
    return build("specs/gdn.rnn", None, {"dim": 48, "heads": 2, "n": 16}, strategy="chunked", chunk=CHUNK)


@pytest.mark.parametrize("spec", ["mamba2", "gdn"])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_no_saved_tensor_copies_another(layer, gdn, spec, dtype):
    """No per-token tensor the backward keeps holds values another kept storage already holds: an fp32
    copy of a bf16 tensor (the upcast saved beside its original), a contiguous copy of a slice of
    the projection's output (which an earlier main kept for mamba2's z and dt_raw: the per-token
    kernels read their inputs contiguous), or a second bf16 copy of x (each projection of x under
    autocast rounded its own). Random activations share no values by chance: a per-token tensor
    whose every value another storage holds is a copy."""
    model = layer if spec == "mamba2" else gdn
    kept = [  # [B, T, ...], or [B·T, ...] as a matrix product saves its input
        (o, t)
        for o, t in _kept(model, _dtype(dtype))
        if t.dim() >= 2 and (t.shape[:2] == (B, T) or t.shape[0] == B * T)
    ]
    storages = {t.untyped_storage().data_ptr(): (o, t) for o, t in kept}
    for owner, t in kept:
        mine = t.untyped_storage().data_ptr()
        vals = t.detach().double().flatten()
        for ptr, (other, u) in storages.items():
            if ptr != mine and torch.isin(vals, _values(u)).all():
                shape = tuple(t.shape)
                raise AssertionError(f"{owner} keeps {t.dtype} {shape}, a copy of values {other} keeps")


def test_recompute_off_keeps_every_value(layer, monkeypatch):
    """ARCHDSL_RECOMPUTE=0 (the A/B switch) keeps the cheap values again: more bytes per token."""
    on = table(
        measure(layer, B, T, torch.bfloat16, "cpu")[0],
        measure(layer, B, 2 * T, torch.bfloat16, "cpu")[0],
        B * T,
    )
    monkeypatch.setenv("ARCHDSL_RECOMPUTE", "0")
    off = table(
        measure(layer, B, T, torch.bfloat16, "cpu")[0],
        measure(layer, B, 2 * T, torch.bfloat16, "cpu")[0],
        B * T,
    )
    assert off[1] > 1.5 * on[1]
