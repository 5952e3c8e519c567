"""The max-plus prefix scan of ``codegen/maxplus.py`` in PyTorch: ``s_t = max(a_t + s_{t-1}, b_t)`` for
every t at once, differentiated by autograd.

    s_t = L_t + max(s_0, max_{τ ≤ t} (b_τ - L_τ)),     L_t = Σ_{τ ≤ t} a_τ

``L_t`` grows with t (mLSTM's ``a`` is a log forget gate, ``≤ 0``), and ``s_t`` is the difference
of two such numbers, so the scan runs in float64: in fp32 the largest error of mLSTM-like ``s_t`` grew
from 9.4e-6 at T = 130 to 3.2e-4 at 4096 and 5.8e-3 at 65536; in float64, with fp32 in and out, it
stays 2.0e-7 to 3.2e-7 (benchmarks/results/maxplus-scan/, CPU).
The float64 tensors are the size of the gates (``[B, T, H]`` for mLSTM), not of the state.

At a tie the gradient goes to the latest maximum (``torch.cummax``'s rule, and ``s_0`` only where it
is strictly larger), which is the recurrence's gradient when each step's tie ``a_t + s_{t-1} = b_t``
goes to ``b_t``; the reference's ``max`` passes half to each at a tie, another subgradient, so the
two differ only where values tie exactly.
"""

from __future__ import annotations

import torch


def max_plus_scan(a: torch.Tensor, b: torch.Tensor, s0: torch.Tensor) -> torch.Tensor:
    """``a``, ``b`` [B, T, …] and ``s0`` [B, …] of one shape -> ``s`` [B, T, …]: s_t for t = 1 … T,
    in the type of ``a`` and ``b``."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    L = torch.cumsum(a.double(), dim=1)
    best = torch.cummax(b.double() - L, dim=1).values
    s0 = s0.double().unsqueeze(1)
    return (L + torch.where(best >= s0, best, s0)).to(dtype)
