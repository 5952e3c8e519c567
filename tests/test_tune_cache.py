"""The autotune cache (codegen/run/tune.py) under concurrent writers: parallel search workers each add
their entries, and none is lost to another's read-modify-write."""

from __future__ import annotations

import json
import multiprocessing as mp

from archdsl.codegen.run import tune


def _writer(cache: str, worker: int, n: int) -> None:
    import os

    os.environ["ARCHDSL_CACHE"] = cache
    for i in range(n):
        tune._store(f"w{worker}-k{i}", [i, worker])


def test_parallel_writers_keep_every_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHDSL_CACHE", str(tmp_path))
    workers, n = 4, 25
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, n)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)  # generous: four interpreters importing torch at once on a busy 2-core machine
        assert p.exitcode == 0
    data = json.loads(tune._cache_file().read_text())
    expected = {f"w{w}-k{i}": [i, w] for w in range(workers) for i in range(n)}
    assert data == expected
    assert not list(tune._cache_file().parent.glob("*.tmp"))  # every write renamed into place


def test_candidates_skip_plans_that_spill(cache):
    """The tuner times no plan whose threads each hold more state than the default's and than
    ``PER_THREAD`` floats (M2RNN at 100M: one warp of 8 heads of 32 x 32 would hold 256 a thread and
    take minutes to compile); a small state keeps every candidate (E88 at 100M: six plans)."""
    from archdsl.codegen import compile_cell

    from archdsl.lm.budget import solve, spec_layer
    from archdsl.lm.model import ModelConfig

    counts = {}
    for spec in ("m2rnn", "e88"):
        cfg0 = ModelConfig(model=spec, backend="triton")
        tuned = compile_cell(spec_layer(solve(cfg0, "100M", cfg0.tolerance)))
        default = tuned.build(None, None)
        cands = tuned.candidates(default)
        states = tuned.cell.states
        limit = max(tune.PER_THREAD, tune.per_thread(default.plan, states))
        assert cands[0][2] is default
        assert all(tune.per_thread(c.plan, states) <= limit for _, _, c in cands)
        counts[spec] = len(cands)
    assert counts == {"m2rnn": 1, "e88": 6}


def test_plan_counts_the_values_a_program_holds(cache):
    """M2RNN at 100M: its step's ``sum[j](H * W)`` holds [h, i, j, l], 32 times its state; the default
    plan keeps one head a program (32,768 floats, 16 warps), not eight (262,144 floats, 8 warps)."""
    from archdsl.codegen import compile_cell

    from archdsl.lm.budget import solve, spec_layer
    from archdsl.lm.model import ModelConfig

    cfg0 = ModelConfig(model="m2rnn", backend="triton")
    plan = compile_cell(spec_layer(solve(cfg0, "100M", cfg0.tolerance))).build(None, None).plan
    assert plan.block["h"] == 1 and plan.num_warps == 16
    assert plan.block["i"] * plan.block["j"] * plan.block["l"] == 32768


def test_plans_are_timed_as_cuda_graphs_or_by_the_wall_clock_with_a_line(monkeypatch):
    """The timer the tuner uses: CUDA-graph replay (GPU time) where the probe call captures; where it
    cannot, the wall clock, and a progress line says so (the GPU side: tests/test_gpu.py)."""
    import triton.testing

    said, used = [], []
    monkeypatch.setattr(tune, "progress", said.append)
    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, **kw: used.append("wall") or 2.0)
    monkeypatch.setattr(triton.testing, "do_bench_cudagraph", lambda fn, **kw: used.append("graph") or 1.0)
    assert tune._graph_timer(lambda: None)(lambda: None) == 1.0
    assert (used, said) == (["graph", "graph"], [])

    def no_capture(fn, **kw):
        raise RuntimeError("operation not permitted when stream is capturing")

    used.clear()
    monkeypatch.setattr(triton.testing, "do_bench_cudagraph", no_capture)
    assert tune._graph_timer(lambda: None)(lambda: None) == 2.0
    assert used == ["wall"] and said == [
        "tuning by wall time: a CUDA graph could not capture the layer (RuntimeError)"
    ]
