"""Training loss at equal steps: a spec's LM against its library's, from the same initial weights.

A gap in training loss at equal steps between a spec model and the library model it equals (gdn.rnn
against fla's GatedDeltaNet) is either the kernels (a gradient that differs in training) or the
initialisation (each side starts from its own rules). This script separates the two. Per seed it
trains, on the same batches for the same number of steps, three LMs of one shape:

- ``spec``: the spec's LM, initialised by the spec's ``init`` lines;
- ``library, spec's weights``: the library's LM with every weight copied from ``spec`` before the
  first step (the embedding and norms as they are; each layer through ``oracle_maps.LAYERS``);
- ``library``: the library's LM with its own initialisation (the bench's baseline).

``spec`` against ``library, spec's weights`` is the kernels alone (same weights, same batches: they
differ by rounding only); ``library, spec's weights`` against ``library`` is the initialisation alone
(the same kernels). A spec file of an older version (``--spec``) shows a change of its init lines in
the same call.

    python benchmarks/same_init.py --spec gdn --library fla-gdn --steps 300 --seeds 0 1 \\
        --data corpus-train-1.txt.xz --val corpus-val.txt.xz --out same-init

Writes ``<out>/results.json`` (every curve) and ``<out>/results.md`` (the loss at chosen steps, and
the mean difference over a window of steps between the pairs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle import copy_weights  # noqa: E402
from oracle_maps import LAYERS  # noqa: E402

from archdsl.lm.config import ModelConfig  # noqa: E402
from archdsl.train.config import TrainConfig  # noqa: E402
from archdsl.train.runinfo import environment  # noqa: E402
from archdsl.train.trainer import Trainer  # noqa: E402

#: the library LM (a baseline of archdsl.lm.baselines) of each spec whose layer it equals
LIBRARY_OF = {"gdn": "fla-gdn"}


def spec_config(args, seed: int) -> ModelConfig:
    return ModelConfig(model=args.spec, preset=args.preset, depth=args.depth, backend=args.backend, seed=seed)


def train_config(args, out: Path, seed: int) -> TrainConfig:
    return TrainConfig(
        steps=args.steps,
        batch=args.batch,
        seq=args.seq,
        seed=seed,
        data=list(args.data),
        val=args.val,
        eval_bytes=args.eval_bytes,
        out=str(out),
        force=True,
        checkpoint=False,
        progress=False,
        log_every=args.log_every,
    )


def copy_lm(spec_model, lib_model, rows) -> None:
    """Every weight of the spec's LM into the library's LM of the same shape."""
    with torch.no_grad():
        lib_model.embed.weight.copy_(spec_model.embed.weight)
        for a, b in [*zip(spec_model.norms, lib_model.norms), (spec_model.norm_f, lib_model.norm_f)]:
            b.load_state_dict(a.state_dict())
        for ours, theirs in zip(spec_model.mixers, lib_model.mixers):
            copy_weights(getattr(ours, "layer", ours), getattr(theirs, "layer", theirs), rows)


def run(name: str, trainer: Trainer) -> dict:
    t = time.perf_counter()
    result = trainer.run()
    print(f"{name}: {result.steps} steps, last-100 loss {result.last100_loss:.4f}, val bpb "
          f"{result.val_bpb:.4f}, {result.tokens_per_s:,.0f} tokens/s, {time.perf_counter() - t:.0f} s",
          flush=True)  # fmt: skip
    return {
        "status": result.status,
        "curve": [[step, loss] for _, step, loss in result.curve],
        "val_bpb": result.val_bpb,
        "last100_loss": result.last100_loss,
        "tokens_per_s": result.tokens_per_s,
        "params": result.params,
    }


def library_config(args, dim: int, seed: int) -> ModelConfig:
    return ModelConfig(model=args.library, dim=dim, depth=args.depth, seed=seed)


def one_seed(args, seed: int, out: Path) -> dict:
    """The three runs of one seed (init and data), each in its own run directory under ``out``."""
    runs = {}
    spec = Trainer(spec_config(args, seed), train_config(args, out / f"spec-{seed}", seed))
    lib_cfg = library_config(args, spec.model.embed.weight.shape[1], seed)
    copied = Trainer(lib_cfg, train_config(args, out / f"copied-{seed}", seed))
    copy_lm(spec.model, copied.model, LAYERS[args.map][3])  # before either trains
    own = Trainer(lib_cfg, train_config(args, out / f"library-{seed}", seed))
    runs["spec"] = run(f"seed {seed} spec", spec)
    runs["library, spec's weights"] = run(f"seed {seed} library with the spec's weights", copied)
    runs["library"] = run(f"seed {seed} library", own)
    return runs


def mean_gap(a: list, b: list, lo: int, hi: int) -> float | None:
    """Mean of a - b over the curve points whose step is in [lo, hi]."""
    bs = dict(b)
    d = [loss - bs[step] for step, loss in a if lo <= step <= hi and step in bs]
    return sum(d) / len(d) if d else None


def markdown(doc: dict, args) -> str:
    lo, hi = args.window
    names = ["spec", "library, spec's weights", "library"]
    env = doc["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    lines = [
        f"Device: {env.get('gpu', env['device'])}; {env['date']}; {versions}; archdsl {doc['commit']}.",
        f"Command: `{doc['command']}`",
        "",
        f"Training loss (nats per byte, mean of the {args.log_every} steps up to each point), "
        f"spec `{args.spec}` (preset {args.preset}) against `{args.library}`, depth {args.depth}.",
        "",
        "| seed | run | " + " | ".join(f"step {s}" for s in args.at) + " | val bpb |",
        "|---|---|" + "---|" * (len(args.at) + 1),
    ]
    for seed, runs in doc["seeds"].items():
        for name in names:
            curve = dict(runs[name]["curve"])
            cells = [f"{curve[s]:.4f}" if s in curve else "—" for s in args.at]
            lines.append(f"| {seed} | {name} | " + " | ".join(cells) + f" | {runs[name]['val_bpb']:.4f} |")
    lines += ["", f"Mean difference of the training loss over steps {lo}–{hi}:", ""]
    lines += ["| seed | spec − library (the bench's pair) | kernels: spec − library with its weights | "
              "init: library with the spec's weights − library |", "|---|---|---|---|"]  # fmt: skip
    for seed, runs in doc["seeds"].items():
        c = {n: runs[n]["curve"] for n in names}
        gaps = [
            mean_gap(c["spec"], c["library"], lo, hi),
            mean_gap(c["spec"], c["library, spec's weights"], lo, hi),
            mean_gap(c["library, spec's weights"], c["library"], lo, hi),
        ]
        lines.append(f"| {seed} | " + " | ".join("—" if g is None else f"{g:+.4f}" for g in gaps) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="gdn", help="a bundled spec or a .rnn file")
    ap.add_argument("--map", default=None, help="the oracle map's name (default: the spec's)")
    ap.add_argument("--library", default=None, help="the library LM (default: LIBRARY_OF)")
    ap.add_argument("--preset", default=None, help="the spec's preset (default: the map's 100M one)")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--backend", default="triton")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--val", default=None)
    ap.add_argument("--eval-bytes", type=int, default=1_000_000)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--at", type=int, nargs="+", default=[50, 100, 200, 300])
    ap.add_argument("--window", type=int, nargs=2, default=[60, 300], metavar=("FROM", "TO"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--commit", default=None, help="archdsl's commit, for a wheel install without git")
    args = ap.parse_args(argv)
    args.map = args.map or Path(args.spec).stem
    if args.map not in LAYERS:
        ap.error(f"--map: no oracle map '{args.map}'; known: {', '.join(sorted(LAYERS))}")
    args.library = args.library or LIBRARY_OF.get(args.map)
    if args.library is None:
        ap.error(f"--library: no library LM known for '{args.map}'; name one")
    args.preset = args.preset or LAYERS[args.map][1]
    args.out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    doc = {"command": " ".join(["python", *sys.argv]), "commit": args.commit, "seeds": {}}
    doc["environment"] = environment(device)
    for seed in args.seeds:
        doc["seeds"][seed] = one_seed(args, seed, args.out)
        (args.out / "results.json").write_text(json.dumps(doc, indent=1))
        (args.out / "results.md").write_text(markdown(doc, args))
    print(markdown(doc, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
