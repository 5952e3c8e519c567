"""``archdsl bench`` with the models spread over the GPUs of one machine, one lane per model.

Each MODEL gets its own ``archdsl bench MODEL <bench flags>`` process on GPU ``i % GPUs``: the GPUs
run at once, each its models one after another (never two runs on one GPU). Every lane gets the same
flags (data, seed, budget, ``--modes``), so each model is measured as ``archdsl bench`` would measure
it alone. Compare rows of one run only: the lanes share the host's processors and memory. The lanes'
tables are merged into ``OUT/results.md`` and ``OUT/results.json`` (with ``--modes``, also the
table of each model at its best mode).

    python benchmarks/bench_lanes.py --out DIR --models E88_d12h32 fla-gdn mamba2 -- \\
        --params 100M --align 128 --minutes 0.5 --backend triton --modes eager,cudagraphs

``--modes-for MODEL=MODES`` gives one lane its own ``--modes`` (a model whose best step mode is known
from an earlier run of every mode, run in that mode alone); the table says which mode each row ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def lane(i: int, model: str, flags: list[str], out: Path, gpu: int) -> int:
    """``archdsl bench MODEL`` on one GPU, its output in ``OUT/lane<i>/``; its exit status."""
    d = out / f"lane{i}"
    d.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "archdsl.cli", "bench", model, *flags, "--out", str(d)]
    with open(d / "bench.log", "w") as log:
        log.write("$ " + " ".join(cmd) + f"  # CUDA_VISIBLE_DEVICES={gpu}\n")
        log.flush()
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def lane_flags(flags: list[str], modes: str | None) -> list[str]:
    """``flags`` with its ``--modes`` replaced by ``modes`` (None: as they are)."""
    if modes is None:
        return flags
    out, skip = [], False
    for f in flags:
        if skip:
            skip = False
        elif f == "--modes":
            skip = True
        elif not f.startswith("--modes="):
            out.append(f)
    return [*out, "--modes", modes]


def parse_modes_for(items: list[str], models: list[str]) -> dict[str, str]:
    """{model: modes} from ``MODEL=MODES`` items; exits 2 with a message on a malformed item."""
    out = {}
    for item in items:
        model, eq, modes = item.partition("=")
        if not eq or not modes or model not in models:
            sys.exit(f"error: --modes-for: expected MODEL=MODES with MODEL one of --models, found {item!r}")
        out[model] = modes
    return out


def merge(out: Path, models: list[str], flags: list[str], seconds: float, extra: str = "") -> str:
    from archdsl.train import benchtable

    rows, best, runs = [], [], {}
    for i, model in enumerate(models):
        path = out / f"lane{i}" / "results.json"
        if not path.exists():
            rows.append({"model": model, "status": "failed", "reason": f"no results (lane{i}/bench.log)"})
            continue
        doc = json.loads(path.read_text())
        rows += doc["rows"]
        best += doc.get("best", [])
        runs |= doc["runs"]
    blank = dict.fromkeys(benchtable.row(benchtable.Entry("", None), None), None)
    rows = [{**blank, "reason": "", **r} for r in rows]
    title = f"archdsl bench in {len(models)} lanes ({seconds / 60:.1f} min wall)"
    text = benchtable.markdown(rows, title)
    if best:
        text += "\n" + benchtable.markdown(best, "Each model at its best mode").replace("# ", "## ", 1)
    command = f"python benchmarks/bench_lanes.py --models {' '.join(models)}{extra} -- {' '.join(flags)}"
    (out / "results.md").write_text(text + f"\n`{command}`\n")
    (out / "results.json").write_text(
        json.dumps({"command": command, "rows": rows, "best": best, "runs": runs}, indent=1, default=str)
    )
    return text


def main() -> int:
    argv = sys.argv[1:]
    flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="one lane each")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--gpus", type=int, help="GPUs to spread the lanes over (default: all visible)")
    p.add_argument("--modes-for", nargs="*", default=[], metavar="MODEL=MODES", help="a lane's own --modes")
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    own = parse_modes_for(args.modes_for, args.models)
    import torch

    gpus = args.gpus or max(1, torch.cuda.device_count())
    start = time.perf_counter()

    def queue(gpu: int) -> list[int]:
        return [
            lane(i, m, lane_flags(flags, own.get(m)), args.out, gpu)
            for i, m in enumerate(args.models)
            if i % gpus == gpu
        ]

    with ThreadPoolExecutor(gpus) as pool:
        codes = [c for q in pool.map(queue, range(gpus)) for c in q]
    extra = "".join(f" --modes-for {m}={v}" for m, v in own.items())
    print(merge(args.out, args.models, flags, time.perf_counter() - start, extra))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
