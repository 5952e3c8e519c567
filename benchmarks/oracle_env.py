"""Settings of an oracle run that change the libraries' kernels or share the GPU between processes.

- ``first_config()``: every Triton autotuner keeps its first configuration. Agreement does not depend
  on the tiling, and a cold fla layer otherwise compiles every candidate (minutes per layer); never
  for timing.
- ``tf32_off()``: the libraries' fp32 products exact ("ieee") or as good as fp32 ("tf32x3": three
  TF32 products per fp32 one, on tensor cores). ``TRITON_F32_DEFAULT`` covers every ``tl.dot``
  without an explicit precision; fla's gated delta rule and KDA name TF32 for their triangular solve
  in a module constant, set here too (before their first compile). "ieee" lowers a product to FMAs,
  which ptxas compiles for minutes: fla's ``chunk_bwd_dqkwg`` took over six minutes on an H200
  (benchmarks/results/oracle-tf32/), so gdn and retnet need "tf32x3".
- ``TimeQueue``: processes that compile in parallel on one GPU time one at a time, once all of them
  are warm (or a deadline has passed), so no timing overlaps another process's kernels.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import time
from pathlib import Path

#: fla modules whose triangular solve names TF32 explicitly (``SOLVE_TRIL_DOT_PRECISION``)
FLA_TF32_CONSTANTS = ["fla.ops.gated_delta_rule.chunk_fwd", "fla.ops.kda.chunk_intra"]


def kernel_module(fn) -> str:
    """The Python module a (possibly wrapped) Triton kernel was defined in."""
    while hasattr(fn, "fn"):
        fn = fn.fn
    return getattr(fn, "__module__", "") or ""


def first_config(modules: tuple[str, ...] | None = None) -> None:
    """Autotuners keep their first configuration: all of them, or those of kernels defined in a
    module under one of ``modules`` (mamba_ssm's first SSD configuration needs more shared memory
    than an H100 has, so the GPU oracle applies this to fla alone)."""
    import triton.runtime.autotuner as autotuner

    init = autotuner.Autotuner.__init__

    def keep_first(self, fn, arg_names, configs, *args, **kwargs):
        if modules is None or kernel_module(fn).startswith(modules):
            configs = configs[:1]
        init(self, fn, arg_names, configs, *args, **kwargs)

    autotuner.Autotuner.__init__ = keep_first


def tf32_off(precision: str = "ieee") -> list[str]:
    """Sets the default fp32 product to ``precision`` ("ieee" or "tf32x3") and fla's explicit TF32
    constants too; returns the constants changed (absent modules are skipped: their layers fail with
    their own message)."""
    os.environ["TRITON_F32_DEFAULT"] = precision
    import triton.language as tl

    changed = []
    for name in FLA_TF32_CONSTANTS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "SOLVE_TRIL_DOT_PRECISION", None) is not None:
            module.SOLVE_TRIL_DOT_PRECISION = tl.constexpr(precision)
            changed.append(f"{name}.SOLVE_TRIL_DOT_PRECISION")
    return changed


class TimeQueue:
    """``turn(name)``: marks this process warm, waits until ``peers`` processes are (or ``deadline``,
    seconds since the epoch, has passed), then holds an exclusive lock on ``folder/lock`` while the
    timed passes run."""

    def __init__(self, folder: Path, peers: int, deadline: float):
        self.folder, self.peers, self.deadline = Path(folder), peers, deadline
        self.folder.mkdir(parents=True, exist_ok=True)

    def ready(self) -> int:
        return len(list(self.folder.glob("ready-*")))

    @contextlib.contextmanager
    def turn(self, name: str):
        (self.folder / f"ready-{name}-{os.getpid()}").touch()
        while self.ready() < self.peers and time.time() < self.deadline:
            time.sleep(0.5)
        with open(self.folder / "lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
