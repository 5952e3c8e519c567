"""Choosing a plan by measuring it: on the first CUDA call, time forward+backward of a few
(tile, warps) candidates at the call's batch size and keep the fastest. Each candidate is timed
replayed as a CUDA graph, so the GPU's time decides and not the host's launch overhead (at a
checkpoint stride of 1 an E88 layer's forward+backward takes about as long on the host as on the GPU;
round 24); where capture fails, by wall time. Results are cached on disk per (generated source of the
default plan, checkpoint stride, GPU, batch, timing); sequence length is not part of the key. Search workers
tune in parallel processes: each entry is added under an exclusive lock on the cache file, so no
worker's entry is lost to another's write."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import replace

import torch
from archdsl.codegen.plan import STATE_TARGET
from archdsl.codegen.run.progress import progress, quiet
from archdsl.codegen.run.runtime import cache_dir

CANDIDATES = ((8, 1), (16, 1), (4, 1), (16, 2), (32, 2), (32, 4))
TUNE_T = 512  # steps timed per candidate: shorter runs favour tiles with less fixed cost
ROUNDS = 3  # interleaved timing rounds; each candidate keeps its best
#: state floats a thread of a candidate plan may hold (of its 255 registers; the step's temporaries
#: need the rest)
PER_THREAD = 64


def _cache_file():
    return cache_dir().parent / "autotune.json"


def _load() -> dict:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def _locked():
    """An exclusive ``flock`` on ``autotune.json.lock`` (released by the kernel if the process dies)."""
    path = _cache_file().with_suffix(".json.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _store(key: str, value) -> None:
    """Add one entry: read, update and replace the file under the lock (an atomic rename, so readers
    without the lock see the old file or the new one, never half of one)."""
    with _locked():
        data = _load()
        data[key] = value
        tmp = _cache_file().with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, _cache_file())


def _graph_timer(probe):
    """``do_bench_cudagraph`` (the calls replayed as one CUDA graph: GPU time) where ``probe`` can be
    captured, else ``do_bench`` (wall time)."""
    from triton.testing import do_bench, do_bench_cudagraph

    try:
        do_bench_cudagraph(probe, rep=5)
    except Exception as e:  # noqa: BLE001 - any capture failure: time by the wall clock instead
        progress(f"tuning by wall time: a CUDA graph could not capture the layer ({type(e).__name__})")
        return lambda fn: do_bench(fn, warmup=3, rep=20)
    return lambda fn: do_bench_cudagraph(fn, rep=20)


def per_thread(plan, states) -> float:
    """State floats each thread of a program holds: the program's state over its 32 x warps threads."""
    return plan.state_bytes(states) / 4 / (32 * plan.num_warps)


class TunedCell:
    """A compiled cell of a tunable strategy whose tile and warps are chosen by measurement on the
    first CUDA call (on the CPU: the default plan)."""

    def __init__(self, layer, cell, strategy, opts):
        self.layer, self.cell, self.strategy_entry, self.opts = layer, cell, strategy, opts
        self.chosen = None

    def build(self, tile, warps):
        return self.strategy_entry.build(
            self.layer, self.cell, replace(self.opts, tile=tile, num_warps=warps)
        )

    def __call__(self, inputs, frontier, state0=None):
        if self.chosen is None:
            self.chosen = self._choose(inputs, frontier)
        return self.chosen(inputs, frontier, state0)

    def candidates(self, default) -> list[tuple]:
        """(tile, warps, compiled cell) of every plan the tuner times, the default first, one per
        distinct (tiles, warps). A candidate whose program holds more state than the default's (and
        than 32 KiB), or whose threads each hold more state than the default's (and than
        ``PER_THREAD`` floats), would spill registers: it runs slower and takes minutes to compile
        (M2RNN_100m's plan of 8 heads of 32 x 32 in one warp, 256 floats a thread), so it is not timed."""
        states = self.cell.states
        limit = max(4 * STATE_TARGET, default.plan.state_bytes(states))
        thread_limit = max(PER_THREAD, per_thread(default.plan, states))
        cands = [(None, None, default)]
        seen = {(default.plan.n_tiles, default.plan.num_warps)}
        for tile, warps in CANDIDATES:
            with quiet():  # the tuning line covers the candidates' modules
                cc = self.build(tile, warps)
            if cc.plan.state_bytes(states) > limit or per_thread(cc.plan, states) > thread_limit:
                continue
            if (cc.plan.n_tiles, warps) not in seen:
                seen.add((cc.plan.n_tiles, warps))
                cands.append((tile, warps, cc))
        return cands

    def _choose(self, inputs, frontier):
        x = next(iter(inputs.values()))
        default = self.build(None, None)
        if x.device.type != "cuda":
            return default
        # the default plan's source hash: a new code generator retunes rather than reuse old choices
        key = f"{default.hash}|C{self.opts.chunk}|{torch.cuda.get_device_name(x.device)}|B{x.shape[0]}|G"
        cached = _load().get(key)
        if cached:
            return self.build(*cached)
        with torch.inference_mode(False):  # plain tensors, whatever mode the first call came in
            short = {k: v[:, :TUNE_T].detach().clone().requires_grad_(True) for k, v in inputs.items()}
            frontier = {k: v.detach().clone() for k, v in frontier.items()}
        cands = self.candidates(default)
        if len(cands) == 1:
            _store(key, [None, None])
            return default
        progress(
            f"tuning {self.layer.name} ({self.strategy_entry.name}, batch {x.shape[0]}): timing "
            f"{len(cands)} launch plans once; the choice is cached in {_cache_file()}"
        )

        def step(cc):
            # the first call may come from inference (decode under no_grad or inference_mode)
            with torch.inference_mode(False), torch.enable_grad():
                y = cc(short, frontier)[0]
                torch.autograd.grad(y, list(short.values()), torch.ones_like(y), allow_unused=True)

        # the first call of every plan compiles its kernels. In turn: Triton 3.6's passes hold the GIL
        # (six plans of E88_100m compiled in threads measured 13.7 s against 14.4 s in turn, H100)
        t0 = time.perf_counter()
        for _, _, cc in cands:
            step(cc)
        compiled_s = time.perf_counter() - t0
        # ROUNDS interleaved rounds, the best time of each: one noisy sample does not pick the plan
        times: dict[int, float] = {}
        timer = _graph_timer(lambda: step(cands[0][2]))
        for _ in range(ROUNDS):
            for i, (_, _, cc) in enumerate(cands):
                ms = timer(lambda cc=cc: step(cc))
                times[i] = min(times.get(i, ms), ms)
        best = min(times, key=times.get)
        tile, warps, cc = cands[best]
        timed = ", ".join(
            f"{c.plan.n_tiles}x{c.plan.num_warps}w {times[i]:.2f}{'*' if i == best else ''}"
            for i, (_, _, c) in enumerate(cands)
        )
        progress(f"tuned {self.layer.name}: compiled in {compiled_s:.1f} s; ms by tiles x warps: {timed}")
        _store(key, [tile, warps])
        return cc
