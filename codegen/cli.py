"""``archdsl compile SPEC [--preset NAME] [--set k=v …] [-o DIR] [--chunk C] [--tile N] [--warps N]
[--strategy NAME] [--products tf32|half]``."""

from __future__ import annotations

import shutil
from pathlib import Path

from archdsl.codegen.emit.names import module_name

from archdsl import args as A
from archdsl.errors import ArchdslError
from archdsl.lang.check_cmd import parse_sets
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.lang.specs_path import resolve_spec


def add_arguments(p) -> None:
    p.add_argument("spec", help="a .rnn file or the name of a bundled spec")
    p.add_argument("--preset", help="a named configuration of the spec")
    p.add_argument("--set", action="append", default=[], metavar="K=V", help="override a hyper or choice")
    p.add_argument(
        "-o", "--out", type=A.writable_dir, help="also copy the generated module into this directory"
    )
    p.add_argument(
        "--chunk",
        type=A.positive_int,
        help="steps per block: the loop's checkpoint stride (default 16; 1 keeps every step's state and "
        "its backward recomputes nothing), the chunked chunk (default 64)",
    )
    p.add_argument(
        "--tile",
        type=A.power_of_two,
        help="block of the split axis, a power of two (default: measured on the GPU)",
    )
    p.add_argument(
        "--warps",
        type=A.power_of_two,
        help="warps per program, a power of two (default: measured on the GPU)",
    )
    p.add_argument("--strategy", help="force an execution strategy (default: the first that applies)")
    A.add_products(p)


def run(args) -> int:
    from archdsl.codegen import applicable, build_cell

    from archdsl.autodiff import extract_cell

    layer = instantiate(parse_file(resolve_spec(args.spec)), args.preset, parse_sets(args.set)).layer
    cc = build_cell(layer, args.chunk, args.tile, args.warps, args.strategy, args.products)
    settings = ", ".join(f"{k}={v}" for k, v in {**layer.hypers, **layer.choices}.items())
    print(f"{layer.name}: compiled ({settings})")
    tuned = False
    for entry, reason in applicable(layer, extract_cell(layer)):
        if entry.name == cc.strategy:
            tuned = entry.tunable and not (args.tile or args.warps)
            print(f"  strategy       {entry.name}: {entry.summary}")
            break
        if reason is None:  # applies, but is not chosen for this cell unless named
            why = entry.declines(layer, extract_cell(layer))
            print(f"  also {entry.name:<9} applies: --strategy {entry.name}" + (f" ({why})" if why else ""))
        else:
            print(f"  not {entry.name:<10} {reason}")
    for label, text in cc.describe():
        print(f"  {label:<14} {text}")
    if tuned:
        print("  tuning         tile and warps above are defaults; `archdsl train` measures them on the GPU")
    print(f"  kernel hash    {cc.hash} (IR {layer.fingerprint()})")
    print(f"  module         {cc.path}")
    return _write(args, layer, cc)


def _write(args, layer, cc) -> int:
    if args.out:
        out = Path(args.out)
        dest = out / f"{module_name(layer.name)}_{cc.hash}.py"
        try:
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cc.path, dest)
        except OSError as e:
            raise ArchdslError(f"-o {args.out}: cannot write {dest}: {e.strerror or e}") from None
        print(f"  written        {dest}")
    return 0
