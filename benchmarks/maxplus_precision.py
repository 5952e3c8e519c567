"""The max-plus scan's rounding against the sequence length (codegen/run/maxplus_scan.py): mLSTM-like
gates (a = logsigmoid(N(0, 1)), b = N(0, 1), s_0 = 0, B 2, H 4), the scan in fp32 and as the compiler
runs it (float64 inside, fp32 in and out), each against the recurrence step by step in float64; the
largest absolute error of s_t over all tokens. CPU, a minute.

    python benchmarks/maxplus_precision.py
"""

from __future__ import annotations

import torch
from archdsl.codegen.run.maxplus_scan import max_plus_scan


def main() -> None:
    torch.manual_seed(0)
    print("| T | L_T | fp32 scan | float64 scan (fp32 in, out) |\n|---|---|---|---|")
    for T in (130, 4096, 65536):
        a = torch.nn.functional.logsigmoid(torch.randn(2, T, 4, dtype=torch.float64))
        b, s0 = torch.randn(2, T, 4, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64)
        s, out = s0, []
        for t in range(T):
            s = torch.maximum(a[:, t] + s, b[:, t])
            out.append(s)
        want = torch.stack(out, 1)
        a32, b32, z32 = a.float(), b.float(), s0.float()
        L = torch.cumsum(a32, 1)
        fp32 = L + torch.maximum(z32[:, None], torch.cummax(b32 - L, 1).values)
        f64 = max_plus_scan(a32, b32, z32)
        errs = [(x.double() - want).abs().max().item() for x in (fp32, f64)]
        print(f"| {T} | {L[:, -1].min().item():.0f} | {errs[0]:.1e} | {errs[1]:.1e} |")


if __name__ == "__main__":
    main()
