"""``archdsl check SPEC… [--preset NAME] [--set k=v …] [--depth L] [--json]``."""

from __future__ import annotations

import json
import sys

from archdsl import args as A
from archdsl.errors import ArchdslError, add_note, format_error, plural
from archdsl.ir import Kind
from archdsl.lang.checker import (
    DEFAULT_DEPTH,
    check_spec,
    declarations,
    instantiate,
    preset_depth,
    search_space,
)
from archdsl.lang.parser import parse_file
from archdsl.lang.specs_path import resolve_spec

VOCAB = 256


def add_arguments(p) -> None:
    p.add_argument("specs", nargs="+", help=".rnn files (or names of the bundled specs)")
    p.add_argument("--preset", help="a named configuration of the spec")
    p.add_argument("--set", action="append", default=[], metavar="K=V", help="override a hyper or choice")
    p.add_argument(
        "--depth", type=A.positive_int, help="layers of the LM (default: the preset's depth, else 20)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per spec")


def parse_sets(items) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ArchdslError(f"--set expects KEY=VALUE, found '{item}'")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def lm_params(layer_params: int, dim: int, depth: int) -> int:
    """variants.md §1: embedding (tied head) + final norm + per layer (norm + mixer)."""
    return VOCAB * dim + dim + depth * (dim + layer_params)


def configured(spec, preset: str | None, sets: dict):
    """The instance for ``--preset``/``--set``; an error inside the file says which options led there."""
    try:
        return instantiate(spec, preset, sets)
    except ArchdslError as e:
        if e.span is not None:
            options = ([f"--preset {preset}"] if preset else []) + [f"--set {k}={v}" for k, v in sets.items()]
            add_note(e, "with " + " ".join(options))
        raise


def summary(path: str, preset: str | None, sets: dict, depth: int | None) -> dict:
    """``depth``: None takes the preset's depth, else 20."""
    spec = parse_file(resolve_spec(path))
    result = check_spec(spec)
    depth = depth or preset_depth(declarations(spec), preset) or DEFAULT_DEPTH
    inst = configured(spec, preset, sets) if (preset or sets) else result.default
    layer = inst.layer
    kinds = layer.graph.kinds()
    named = {n: kinds[i] for n, i in layer.values.items()}
    return {
        "spec": path,
        "name": layer.name,
        "hypers": layer.hypers,
        "choices": layer.choices,
        "sizes": layer.sizes,
        "layer_params": layer.param_count(),
        "layer_params_formula": str(inst.formula),
        "params": lm_params(layer.param_count(), layer.dim, depth),
        "depth": depth,
        "dim": layer.dim,
        "state_per_layer": layer.state_size(),
        "states": {s: list(ax) for s, ax in layer.states.items()},
        "per_token": sorted(n for n, k in named.items() if k == Kind.TOKEN),
        "recurrent": sorted(n for n, k in named.items() if k == Kind.RECURRENT),
        "constants": sorted(n for n, k in named.items() if k == Kind.CONST),
        "presets": sorted(result.presets),
        "search_space": {d.name: d.describe() for d in search_space(spec)},
        "configurations_checked": result.variants_checked,
        "warnings": [format_error(w) for w in inst.warnings],
    }


def run(args) -> int:
    sets = parse_sets(args.set)
    failed = 0
    for path in args.specs:
        try:
            info = summary(path, args.preset, sets, args.depth)
        except ArchdslError as e:
            print(format_error(e), file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps(info))
            continue
        for w in info["warnings"]:
            print(w, file=sys.stderr)
        hypers = ", ".join(f"{k}={v}" for k, v in {**info["hypers"], **info["choices"]}.items())
        print(f"{info['spec']}: ok ({plural(info['configurations_checked'], 'configuration')} checked)")
        print(f"  {info['name']}: {hypers}")
        print(f"  layer params   {info['layer_params']:,} = {info['layer_params_formula']}")
        print(f"  LM params      {info['params']:,} (depth {info['depth']}, dim {info['dim']})")
        states = ", ".join(f"{s}[{', '.join(a)}]" for s, a in info["states"].items())
        print(f"  state/layer    {info['state_per_layer']:,} floats ({states})")
        print(f"  per-token      {', '.join(info['per_token']) or '-'}")
        print(f"  recurrent      {', '.join(info['recurrent']) or '-'}")
        if info["presets"]:
            print(f"  presets        {', '.join(info['presets'])}")
        if info["search_space"]:
            print("  search         " + "; ".join(f"{k} in {v}" for k, v in info["search_space"].items()))
    return 2 if failed else 0
