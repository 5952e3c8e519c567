"""Compile every distinct launch that ``record_launches.py`` recorded for an H100 (sm_90a) on this
CPU, with Triton's own compiler and the ptxas bundled with it (``TRITON_INTERPRET`` unset): per
kernel the CPU time of the compile (this process and ptxas), shared memory, registers and spills.

    python compile_launches.py LAUNCHES.json
"""

import importlib
import importlib.util
import json
import os
import resource
import sys
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
from kernel_resources import ptxas_report  # noqa: E402

assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), "unset TRITON_INTERPRET: this compiles"
modules = {}


def kernel(rec):
    """The recorded kernel's JITFunction (archdsl's own module, or a generated one by its file)."""
    f = rec["file"]
    if f not in modules:
        if rec["module"].startswith("archdsl."):
            modules[f] = importlib.import_module(rec["module"])
        else:
            spec = importlib.util.spec_from_file_location(f"generated_{len(modules)}", f)
            modules[f] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(modules[f])
    return getattr(modules[f], rec["name"])


def source(fn, rec) -> ASTSource:
    """The launch's signature: constexprs, integers equal to 1 as constants, D as divisibility by 16."""
    sig, cx, attrs = {}, {}, {}
    values = {**rec["cx"], **{k: tuple(v) for k, v in rec["sig"].items()}}
    for i, p in enumerate(fn.params):
        if p.name not in values:
            continue  # its default
        v = values[p.name]
        if p.is_constexpr or v is None or v == 1:
            sig[p.name], cx[(i,)] = "constexpr", v
        elif isinstance(v, tuple):
            sig[p.name] = v[0]
            if v[1] == "D":
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:  # an integer the interpreted signature took for a constexpr (T, H, K, V)
            sig[p.name] = "i32"
            if v % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return ASTSource(fn, sig, constexprs=cx, attrs=attrs)


def cpu() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


seen, total = set(), 0.0
records = json.loads(Path(sys.argv[1]).read_text())
for rec in records:
    key = json.dumps([rec["name"], rec["sig"], rec["cx"], rec["opts"]], sort_keys=True)
    if key in seen:
        continue
    seen.add(key)
    fn = kernel(rec)
    opts = {k: v for k, v in rec["opts"].items() if k in ("num_warps", "num_stages")}
    c0 = cpu()
    k = triton.compile(source(fn, rec), target=GPUTarget("cuda", 90, 32), options=opts)
    spent = cpu() - c0
    total += spent
    shown = {n: v for n, v in rec["cx"].items() if n in ("C", "BK", "BV", "I", "J", "BT", "BC")}
    usage = ptxas_report(k.asm["ptx"])
    line = f"{rec['name']:28s} {spent:6.2f} s CPU  shared {k.metadata.shared:6d} B  {usage}"
    print(f"{line}  {shown} {opts}", flush=True)
print(f"{len(seen)} distinct of {len(records)} launches; {total:.1f} s CPU compiling in all", flush=True)
