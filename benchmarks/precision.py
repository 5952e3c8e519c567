"""Each side's bf16 distance to the fp32 truth: a spec's chunked kernels (at several launch settings)
and the library layer that defines the spec, both against the spec's reference interpreter in fp32 on
the same bf16-rounded weights and input.

The kernel harness compares the compiled kernels with the reference at the same precision; this
script says how far each bf16 side is from exact arithmetic, so a precision setting of ours can be
judged against what the library's users already accept.

    python benchmarks/precision.py --specs gdn --variants "" "products=half" --shapes 2x128,2x512

prints one markdown table per spec and shape (``--out``: also writes them to a file). Needs CUDA and
the library (benchmarks/oracle_maps.py's table says which).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from archdsl.codegen.run import chunked_common  # noqa: E402
from kernel_harness import generic_weights  # noqa: E402
from oracle import _errors, _grads, copy_weights, prepare_libraries  # noqa: E402
from oracle_maps import LAYERS, VIEWS  # noqa: E402

from archdsl.lang.checker import instantiate  # noqa: E402
from archdsl.lang.parser import parse_file  # noqa: E402
from archdsl.layer import RecurrentLayer  # noqa: E402

#: where both sides run ("cpu": a smoke test of this script under TRITON_INTERPRET=1, ours alone)
DEVICE = "cuda"


def settings(variant: str) -> tuple[dict, dict]:
    """``"products=half,key=1"`` -> ({"products": "half"}, {key: 1}): the layer's compile options
    (``products``) and ``chunked_common.LAUNCH`` settings."""
    options, launch = {}, {}
    for item in filter(None, variant.replace(" ", ",").split(",")):
        key, _, value = item.partition("=")
        if key == "products":
            options[key] = value
        elif key in chunked_common.LAUNCH:
            launch[key] = int(value)
        else:
            raise SystemExit(f"error: --variants: expected products=… or one of LAUNCH's keys, found '{key}'")
    return options, launch


def distances(spec: str, B: int, T: int, variants: list[str], chunk: int) -> dict[str, dict]:
    """{side: {tensor: relative RMS to the fp32 truth}} for every variant of ours, the library and the
    reference in bf16."""
    library, preset, build, rows = LAYERS[spec]
    ir = instantiate(parse_file(ROOT / "specs" / f"{spec}.rnn"), preset, {}).layer
    torch.manual_seed(0)
    base = generic_weights(RecurrentLayer(ir, backend="triton", seed=0, chunk=chunk, strategy="chunked"))
    base = base.to(DEVICE, torch.bfloat16)
    truth = RecurrentLayer(ir, backend="reference", seed=0).to(DEVICE)
    truth.load_state_dict(base.state_dict())  # the rounded weights, in fp32
    try:
        lib = build(ir, "chunk").to(DEVICE)
        copy_weights(truth, lib, rows, VIEWS.get(spec))
        lib = lib.to(torch.bfloat16)
    except ImportError as e:  # the library is not installed: our side alone
        print(f"{library}: unavailable ({e})", flush=True)
        lib = None
    x = torch.randn(B, T, ir.dim, generator=torch.Generator().manual_seed(1)).to(DEVICE, torch.bfloat16)
    w = torch.randn(B, T, ir.dim, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    exact = _grads(truth, x.float(), w, rows, spec, True)
    sides = {}
    saved = dict(chunked_common.LAUNCH)
    for variant in variants:
        options, launch = settings(variant)
        ours = RecurrentLayer(ir, backend="triton", seed=0, chunk=chunk, strategy="chunked", **options)
        ours = ours.to(DEVICE, torch.bfloat16)
        ours.load_state_dict(base.state_dict())
        chunked_common.LAUNCH.update(launch)
        try:
            sides[f"archdsl {variant or 'defaults'}"] = _errors(_grads(ours, x, w, rows, spec, True), exact)
        finally:
            chunked_common.LAUNCH.clear()
            chunked_common.LAUNCH.update(saved)
    if lib is not None:
        sides[library] = _errors(_grads(lib, x, w, rows, spec, False), exact)
    reference = copy.deepcopy(truth).to(torch.bfloat16)
    sides["reference bf16"] = _errors(_grads(reference, x, w, rows, spec, True), exact)
    return sides


def table(spec: str, B: int, T: int, sides: dict[str, dict]) -> str:
    names = list(sides)
    tensors = list(next(iter(sides.values())))
    lines = [
        f"### {spec}, B {B} × T {T}, bf16: relative RMS to the fp32 reference",
        "",
        "| tensor | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for t in tensors:
        lines.append(f"| {t} | " + " | ".join(f"{sides[n][t]:.2e}" for n in names) + " |")
    lines.append("| **max** | " + " | ".join(f"**{max(sides[n].values()):.2e}**" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", default="gdn", help="comma-separated specs of benchmarks/oracle_maps.py")
    ap.add_argument(
        "--variants", nargs="+", default=[""], help='settings of ours, e.g. "" "products=half" "tie=0"'
    )
    ap.add_argument("--shapes", default="2x128,2x512", help="comma-separated BxT")
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--out", type=Path, help="also write the tables here")
    ap.add_argument("--device", default=DEVICE, help="cuda, or cpu for a smoke test (TRITON_INTERPRET=1)")
    args = ap.parse_args(argv)
    globals()["DEVICE"] = args.device
    for variant in args.variants:
        settings(variant)  # a misspelt key fails before anything runs
    prepare_libraries()
    out = []
    for spec in args.specs.split(","):
        for shape in args.shapes.split(","):
            B, T = (int(n) for n in shape.split("x"))
            out.append(table(spec, B, T, distances(spec, B, T, args.variants, args.chunk)))
            print(out[-1], flush=True)
            if args.out:
                args.out.write_text("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
