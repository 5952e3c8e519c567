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
