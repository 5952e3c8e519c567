"""Scores multiplied as two 16-bit terms where the readout sums the chunked op's heads.

specs/retnet.rnn splits each key head into its two rotary halves ``p``: the op runs them as heads
and the readout adds their outputs. In a token whose halves cancel (q·k ≈ 0 over the whole key),
each half's intra-chunk scores rounded to bf16 leave the sum with an error of 2⁻⁹ of a half's size:
RetNet_100m's bf16 layer was 4.7e-2 off its own bf16 reference at B 2 × T 100 (its gradients of q and
k; `LinearForm.split_scores`). The classifier marks such forms and the output kernel then multiplies
the scores as hi + lo, two bf16 terms (5.1e-3 at that shape).
"""

from __future__ import annotations

from pathlib import Path

import torch
from archdsl.codegen.classify import classify
from archdsl.codegen.run.chunked_kernels import chunked_forward
from archdsl.codegen.run.chunked_torch import chunked_torch

from archdsl.autodiff import extract_cell
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file

ROOT = Path(__file__).resolve().parents[1]


def _forms(spec: str, preset: str = "test"):
    layer = instantiate(parse_file(ROOT / "specs" / f"{spec}.rnn"), preset).layer
    return classify(extract_cell(layer)).forms


def test_the_heads_a_readout_sums_are_marked():
    (retnet,) = _forms("retnet")
    assert (retnet.heads, retnet.summed, retnet.split_scores) == (("h", "p"), ("p",), True)
    assert retnet.describe().endswith("; the readout sums heads p")
    (gdn,) = _forms("gdn")
    assert gdn.summed == () and not gdn.split_scores


def _cancelling_heads(eps: float, T: int = 13, K: int = 16, V: int = 16):
    """Two heads whose outputs nearly cancel: head 1's key is minus head 0's plus ``eps`` of another,
    same queries and values; every input in bf16 (as the layer's rounded q and k come). One chunk
    (T ≤ 16): the scores alone. Between chunks the kept states are rounded element by element, as a
    library that stores its states in bf16 rounds them over the whole key."""
    g = torch.Generator().manual_seed(0)
    q0, k0, r = (torch.randn(1, T, 1, K, generator=g) for _ in range(3))
    v0 = torch.randn(1, T, 1, V, generator=g)
    q = torch.cat([q0, q0], 2).bfloat16()
    k = torch.cat([k0, -k0 + eps * r], 2).bfloat16()
    v = torch.cat([v0, v0], 2).bfloat16()
    lw = torch.full((1, T, 2), -0.05)
    return lw, q, k, v, torch.zeros(1, 2, K, V)


def test_split_scores_keep_a_sum_over_cancelling_heads():
    lw, q, k, v, h0 = _cancelling_heads(1e-2)
    exact, _ = chunked_torch(lw.double(), q.double(), k.double(), v.double(), [], h0.double(), 16)
    want = exact.sum(2)

    def error(split: bool) -> float:
        o, _ = chunked_forward(lw, q, k, v, [], h0, 16, "bf16", torch.float32, torch.bfloat16, split)
        got = o.double().sum(2)
        return ((got - want).pow(2).mean() / want.pow(2).mean()).sqrt().item()

    once, split = error(False), error(True)
    assert once > 5e-2, once  # each head's scores rounded once: the sum keeps their rounding
    assert split < 5e-3, split
