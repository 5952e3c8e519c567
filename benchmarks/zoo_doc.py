"""docs/zoo.md from the oracle's results: one row per zoo spec, nothing written by hand.

    python benchmarks/zoo_doc.py benchmarks/results/oracle/*.json -o docs/zoo.md

A spec's row: its lines (not blank, not only a comment), its paper, the library layer it is compared
with, the largest relative RMS error over the output and every gradient in fp32 and in bf16 (with the
library's precision where it is not plain fp32), the strategy archdsl compiles it with today (at the
preset the oracle used; a time measured under another strategy says which), and the time of forward +
backward against the library's. A spec the results do not cover says why.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from oracle_maps import LAYERS, NO_LIBRARY, PAPERS  # noqa: E402

FP32_TOL, BF16_TOL = 1e-4, 2e-2


def spec_lines(spec: str) -> int:
    path = ROOT / "specs" / f"{spec}.rnn"
    return sum(
        1 for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")
    )


def spec_strategy(spec: str, preset: str) -> str:
    """The strategy archdsl picks for the spec at ``preset`` (``archdsl compile`` prints the same)."""
    from archdsl.codegen.run.strategies import choose

    from archdsl.autodiff import extract_cell
    from archdsl.lang.checker import instantiate
    from archdsl.lang.parser import parse_file

    layer = instantiate(parse_file(ROOT / "specs" / f"{spec}.rnn"), preset, {}).layer
    return choose(layer, extract_cell(layer)).name


def _agreement(r: dict, dtype: str, tf32_off: bool = False) -> str:
    runs = [a for a in r.get("agreement", []) if a["dtype"] == dtype and a.get("tf32_off", False) == tf32_off]
    if not runs:
        return f"— ({r['fp32_skipped']})" if dtype == "float32" and r.get("fp32_skipped") else "—"
    worst = max(runs, key=lambda a: a["max"])
    tol = FP32_TOL if dtype == "float32" else BF16_TOL
    mark = "" if worst["max"] <= tol else f" (> {tol:g}: {worst['worst']})"
    sides = [a for a in runs if "archdsl_vs_fp32" in a]
    if sides:  # each side's distance to the library in fp32: where a bf16 difference comes from
        names = ["archdsl", "library"] + (
            ["reference"] if all("reference_vs_fp32" in a for a in sides) else []
        )
        far = {n: max((a[f"{n}_vs_fp32"] for a in sides), key=lambda e: e["max"]) for n in names}
        mark += "; to fp32: " + ", ".join(f"{n} {e['max']:.1e} ({e['worst']})" for n, e in far.items())
    controls = [a["library_control"] for a in runs if "library_control" in a]
    if controls:  # two of the library's own kernels at this precision: what agreement can mean here
        c = max(controls, key=lambda c: c["max"])
        mark += f"; the library's {c['mode']} kernel to its own: {c['max']:.1e} ({c['worst']})"
    return f"{worst['max']:.1e}{mark}"


def _fp32(r: dict) -> str:
    """The fp32 agreement with the library as it ships (its TF32 products), its precision note, and
    the same comparison with the library's fp32 products made exact (``oracle.py --tf32-off``)."""
    text = _agreement(r, "float32") + (f"; {r['precision']}" if r.get("precision") else "")
    off = [a for a in r.get("agreement", []) if a.get("tf32_off") and a["dtype"] == "float32"]
    if off:
        how = " (3×TF32 products)" if any(a.get("f32_products") == "tf32x3" for a in off) else ""
        text += f"; TF32 off{how}: {_agreement(r, 'float32', True)}"
    return text


def row(spec: str, r: dict | None) -> str:
    paper = PAPERS.get(spec, "")
    paper = f"[{paper}](https://arxiv.org/abs/{paper.removeprefix('arXiv:')})" if paper else ""
    if r is None:
        library = LAYERS[spec][0] if spec in LAYERS else "—"
        why = NO_LIBRARY.get(spec, "not in these results")
        return f"| {spec} | {spec_lines(spec)} | {paper} | {library} | — | — | — | {why} |"
    if "error" in r:
        failed = f"failed: {r['error'][:120]}"
        return f"| {spec} | {spec_lines(spec)} | {paper} | {r['library']} | — | — | — | {failed} |"
    strategy = spec_strategy(spec, r["preset"])
    t = r.get("time")
    timing = f"{t['ratio']:.2f}× ({t['archdsl_ms']:.2f} / {t['library_ms']:.2f} ms)" if t else "—"
    if t and t.get("device"):
        timing += f", {t['device'].removeprefix('NVIDIA ').split()[0]}"
    if t and t.get("strategy", r.get("strategy", strategy)) != strategy:
        timing += f", measured on the {t.get('strategy', r.get('strategy'))} strategy"
    if t and t.get("note"):
        timing += f"; {t['note']}"
    bf16 = _agreement(r, "bfloat16")
    return (
        f"| {spec} | {spec_lines(spec)} | {paper} | {r['library']} | {_fp32(r)} | {bf16} | "
        f"{strategy} | {timing} |"
    )


def render(doc: dict) -> str:
    meta = doc["meta"]
    by_spec = {r["spec"]: r for r in doc["results"]}
    specs = [*PAPERS, *(s for s in by_spec if s not in PAPERS)]
    t = next((r["time"] for r in doc["results"] if "time" in r), None)
    shape = f"B {t['B']} × T {t['T']}, {t['dtype']}" if t else "—"
    out = [
        "# The zoo: the field's recurrent layers as specs",
        "",
        "Generated by `benchmarks/zoo_doc.py` from the oracle's results (`benchmarks/oracle.py`): each spec",
        "and the library layer that defines it, built with the same weights and run on the same input.",
        "Agreement is the largest relative RMS error over the output and every gradient (the input's and",
        "each parameter's) at two shapes, one with T not a multiple of 64; the acceptance is 1e-4 in fp32",
        "(or the library's precision, stated) and 2e-2 in bf16. Time is forward + backward of the whole",
        f"layer at the library's 100M configuration ({shape}), archdsl / library.",
        "",
        'In fp32, "TF32 off" is the same comparison with the libraries\' fp32 products made exact',
        "(`oracle.py --tf32-off`), or, where marked 3×TF32, fp32-accurate on tensor cores",
        "(`--tf32-off tf32x3`: exact products compile for minutes in some of fla's kernels). In bf16,",
        '"to fp32" is each side\'s distance (worst tensor) to the library in fp32 on the same',
        "bf16-rounded weights and input: archdsl's compiled layer, the library,",
        "and, where measured, the spec's reference interpreter in bf16 (its projections and their",
        "gradients in bf16, the rest in fp32), which separates the kernels' rounding from the spec's own.",
        "",
        f"Device: {meta['device']}; {meta['date']}; torch {meta['torch']}, fla {meta.get('fla')}, "
        f"mamba_ssm {meta.get('mamba_ssm')}, triton {meta.get('triton')}"
        + (" (--quick: small sizes)" if meta.get("quick") else "")
        + f". Command: `{meta['command']}`.",
        "",
        "| spec | lines | paper | library | fp32 | bf16 | strategy | time vs library |",
        "|---|---|---|---|---|---|---|---|",
        *(row(s, by_spec.get(s)) for s in specs),
    ]
    return "\n".join(out) + "\n"


def merge(docs: list[dict]) -> dict:
    """One document from several runs (in date order): each spec's row from the runs that have it,
    field by field: its agreement rows of each dtype from the last run that measured that dtype (fp32
    rows with the libraries' TF32 off kept apart from those with it on, and never overriding the
    library's stated precision; bf16 products are the same either way, so a bf16 row is a bf16 row),
    its time from the last run that timed it, with the strategy and device it ran on; a run that failed
    resets the row.
    The runs' devices, dates and commands listed together."""
    rows: dict[str, dict] = {}
    for doc in docs:
        products = doc["meta"].get("tf32_off")  # True (exact) in runs before --tf32-off took a value
        off = bool(products)
        for r in doc["results"]:
            if "error" in r:
                rows[r["spec"]] = r
                continue
            old = {k: v for k, v in rows.get(r["spec"], {}).items() if k not in ("error", "traceback")}
            new = {**old, **{k: v for k, v in r.items() if k not in ("agreement", "time", "precision")}}
            if not off or "precision" not in old:
                new["precision"] = r.get("precision")
            if "time" in r:
                new["time"] = {"strategy": r.get("strategy"), "device": doc["meta"]["device"], **r["time"]}
            mine = [dict(a, tf32_off=off and a["dtype"] == "float32") for a in r.get("agreement", [])]
            if products == "tf32x3":
                mine = [dict(a, f32_products="tf32x3") for a in mine]
            measured = {(a["dtype"], a["tf32_off"]) for a in mine}
            kept = [
                a for a in old.get("agreement", []) if (a["dtype"], a.get("tf32_off", False)) not in measured
            ]
            new["agreement"] = kept + mine
            rows[r["spec"]] = new
    meta = dict(docs[-1]["meta"])
    for key in ("device", "date", "command"):
        meta[key] = "; ".join(dict.fromkeys(d["meta"][key] for d in docs))
    return {"meta": meta, "results": list(rows.values())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="docs/zoo.md from benchmarks/oracle.py's results.json")
    ap.add_argument("results", type=Path, nargs="+", help="results.json files (the latest run wins)")
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "zoo.md")
    args = ap.parse_args(argv)
    docs = []
    for path in args.results:
        try:
            docs.append(json.loads(path.read_text()))
            docs[-1]["meta"]
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {path}: not an oracle results file ({type(e).__name__}: {e})", file=sys.stderr)
            return 2
    docs.sort(key=lambda d: d["meta"]["date"])  # stable: the order given breaks ties
    text = render(merge(docs))
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
