"""``archdsl compile SPEC [--preset NAME] [--set k=v …] [-o DIR] [--chunk C] [--tile N] [--warps N]``."""

from __future__ import annotations

import shutil
from pathlib import Path

from archdsl import args as A
from archdsl.check_cmd import parse_sets
from archdsl.checker import instantiate
from archdsl.errors import ArchdslError
from archdsl.parser import parse_file
from archdsl.specs_path import resolve_spec


def add_arguments(p) -> None:
    p.add_argument("spec", help="a .rnn file or the name of a bundled spec")
    p.add_argument("--preset", help="a named configuration of the spec")
    p.add_argument("--set", action="append", default=[], metavar="K=V", help="override a hyper or choice")
    p.add_argument(
        "-o", "--out", type=A.writable_dir, help="also copy the generated module into this directory"
    )
    p.add_argument(
        "--chunk", type=A.positive_int, default=16, help="checkpoint stride C of the backward (default 16)"
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


def run(args) -> int:
    from archdsl.codegen import build_cell

    layer = instantiate(parse_file(resolve_spec(args.spec)), args.preset, parse_sets(args.set)).layer
    cc = build_cell(layer, args.chunk, args.tile, args.warps)
    info = cc.plan.describe(cc.cell.states)
    settings = ", ".join(f"{k}={v}" for k, v in {**layer.hypers, **layer.choices}.items())
    print(f"{layer.name}: compiled ({settings})")
    print(f"  strategy       {getattr(cc, 'strategy', info['strategy'])}")
    if "rows_per_program" in info:  # the persistent dense recurrence
        print(
            f"  grid           {info['programs']} programs per batch block, each "
            f"{info['rows_per_program']} rows of axis {info['split_axes'][0]}; blocks {info['blocks']}"
        )
        print("  launches       one per direction while the grid fits the GPU's SMs, else one per step")
        print("  backward       every state and contraction stored; each matrix's gradient one GEMM")
        print(f"  warps          {info['num_warps']}")
        print(f"  kernel hash    {cc.hash} (IR {layer.fingerprint()})")
        print(f"  module         {cc.path}")
        return _write(args, layer, cc)
    print(
        f"  grid           {info['grid']} programs; split axes {', '.join(info['split_axes']) or '-'}; "
        f"blocks {info['blocks']}"
    )
    if getattr(cc, "readout", None) is not None:
        axes = ", ".join(cc.readout.part.inputs[cc.readout_input])
        print(f"  readout        y from {cc.readout_input}[{axes}] in parallel kernels after the loop")
    if getattr(cc, "hoisted", None):
        print(f"  per-token      {' '.join(cc.hoisted)} computed in parallel kernels, read by the loop")
    print(f"  state/program  {info['state_bytes_per_program']:,} bytes in registers (fp32)")
    print(f"  checkpoints    every {info['checkpoint_stride']} steps (backward recomputes each segment once)")
    print(
        f"  warps          {info['num_warps']}"
        + (
            ""
            if args.tile or args.warps
            else " (default; `archdsl train` measures tile and warps on the GPU)"
        )
    )
    print(f"  kernel hash    {cc.hash} (IR {layer.fingerprint()})")
    print(f"  module         {cc.path}")
    return _write(args, layer, cc)


def _write(args, layer, cc) -> int:
    if args.out:
        out = Path(args.out)
        dest = out / f"{layer.name}_{cc.hash}.py"
        try:
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cc.path, dest)
        except OSError as e:
            raise ArchdslError(f"-o {args.out}: cannot write {dest}: {e.strerror or e}") from None
        print(f"  written        {dest}")
    return 0
