"""What one spec layer keeps for its backward: every saved tensor, who saves it, bytes per token.

Runs one ``RecurrentLayer`` (the triton backend: on CUDA, or on the CPU under TRITON_INTERPRET=1)
forward as the LM runs it (fp32 weights, bf16 autocast with ``--dtype bf16``), then walks the autograd
graph from its output: each node's saved tensors as they are kept (``_raw_saved_*``: PyTorch's own
backward nodes and custom Functions, archdsl's ops by name; a value archdsl/recompute.py remakes in
the backward is listed with 0 bytes) with dtype, shape and bytes per token, from the growth between
T and 2T tokens (so per-chunk tensors count and weights' casts do not). Tensors that share storage
are counted once. On CUDA the layer's allocated memory after the forward (what the backward holds,
tensors stashed outside ``save_for_backward`` included) is printed too.

    TRITON_INTERPRET=1 python benchmarks/saved_memory.py                     # mamba2, small, bf16
    python benchmarks/saved_memory.py --spec specs/mamba2.rnn --preset Mamba2_100m --B 32 --T 512
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer
from archdsl.recompute import Recipe

#: the default layer: mamba2 at a width the interpreter runs in seconds, axes of distinct sizes
#: (h 3, p 32, s 16)
SMALL = {"dim": 48, "expansion": 2, "headdim": 32, "dstate": 16}


@dataclass(frozen=True)
class Saved:
    owner: str  # the backward node (an archdsl op by its name)
    dtype: torch.dtype
    shape: tuple
    nbytes: int  # of the storage (a view of a larger tensor counts what it keeps alive)
    storage: int  # the storage's address: shared storage is counted once


def _owner(node) -> str:
    op = getattr(node, "op", None)  # archdsl's eager ops (codegen/run/ops.py: _Eager keeps ``ctx.op``)
    if op is not None and hasattr(op, "custom"):
        return str(op.custom._qualname).removeprefix("archdsl::")
    return node.name()


def _raw(value) -> list:
    """The ``SavedTensor``s in a node's ``_raw_saved_*`` value (one, or a list of them)."""
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _raw(v)]
    return [value] if isinstance(value, torch._C._autograd.SavedTensor) else []


def kept(out: torch.Tensor) -> list[tuple[str, object]]:
    """(owner, what it keeps) for every value the backward of ``out`` saved, as it is kept
    (``SavedTensor.data``: the tensor, or what archdsl/recompute.py saves in its place, a recipe)."""
    seen, stack, found = set(), [out.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(n for n, _ in node.next_functions)
        raw = [r for a in dir(node) if a.startswith("_raw_saved_") for r in _raw(getattr(node, a))]
        found += [(_owner(node), r.data) for r in raw]
    return found


def saved_tensors(out: torch.Tensor, params: set[int]) -> list[Saved]:
    """Every tensor the backward of ``out`` keeps, by owner (a recipe counted as 0 bytes);
    parameters (``params``: their storages) left out, they are not activations."""
    found = []
    for owner, data in kept(out):
        if isinstance(data, Recipe):
            found.append(Saved(owner + " (recomputed)", data.dtype, tuple(data.size), 0, -id(data)))
        elif isinstance(data, torch.Tensor) and data.untyped_storage().data_ptr() not in params:
            s = data.untyped_storage()
            found.append(Saved(owner, data.dtype, tuple(data.shape), s.nbytes(), s.data_ptr()))
    return found


def build(spec: str, preset: str | None, sets: dict, **options) -> RecurrentLayer:
    layer = instantiate(parse_file(spec), preset, sets).layer
    return RecurrentLayer(layer, backend="triton", seed=0, **options)


def measure(model: RecurrentLayer, B: int, T: int, dtype: torch.dtype, device: str):
    """(saved tensors, allocated bytes after the forward beyond the input and output: CUDA only, else
    None)."""
    x = torch.randn(B, T, model.ir.dim, device=device, requires_grad=True)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    cuda = device.startswith("cuda")
    before = torch.cuda.memory_allocated() if cuda else 0
    with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
        y, _ = model(x)
    held = torch.cuda.memory_allocated() - before - y.untyped_storage().nbytes() if cuda else None
    return saved_tensors(y, params), held


def _rows(saved: list[Saved]) -> dict[tuple, tuple]:
    """{(owner, dtype, k-th tensor of that owner and dtype): (shape, bytes)}, a storage's bytes counted
    at its first owner in the walk (the walk's order is the graph's, the same at every length)."""
    rows, counted, n = {}, set(), {}
    for s in saved:
        dt = str(s.dtype).removeprefix("torch.")
        k = n.get((s.owner, dt), 0)
        n[(s.owner, dt)] = k + 1
        rows[(s.owner, dt, k)] = ("×".join(map(str, s.shape)), 0 if s.storage in counted else s.nbytes)
        counted.add(s.storage)
    return rows


def table(short: list[Saved], long: list[Saved], tokens: int) -> tuple[list[str], float, float]:
    """Markdown rows from the same layer at ``tokens`` and twice as many tokens: bytes per token (the
    growth between the two, so per-chunk tensors count and weights' casts do not) and bytes that do
    not grow (per layer); the totals of both."""
    a, b = _rows(short), _rows(long)
    lines = ["| owner | dtype | shape | bytes/token | bytes/layer |", "|---|---|---|---:|---:|"]
    out = []
    for key, (shape, n1) in a.items():
        n2 = b[key][1]
        per_token = (n2 - n1) / tokens
        out.append((key[0], key[1], shape, per_token, n1 - per_token * tokens))
    for owner, dt, shape, pt, pl in sorted(out, key=lambda r: (-r[3], -r[4])):
        if pt or pl or owner.endswith("(recomputed)"):
            lines.append(f"| {owner} | {dt} | {shape} | {pt:.1f} | {pl:.0f} |")
    return lines, sum(r[3] for r in out), sum(r[4] for r in out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="specs/mamba2.rnn")
    ap.add_argument("--preset", default=None, help="the spec's preset (default: the small sizes SMALL)")
    ap.add_argument("--set", nargs="*", default=[], metavar="HYPER=N", help="hyperparameters to override")
    ap.add_argument("--B", type=int, default=2)
    ap.add_argument("--T", type=int, default=128)
    ap.add_argument("--strategy", default="chunked", help="the execution strategy (as mamba2's LM at 100M)")
    ap.add_argument("--chunk", type=int, default=None, help="steps per block (default the strategy's)")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="bf16: autocast, fp32 weights")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if args.device == "cpu" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        ap.error("on the CPU the triton backend needs TRITON_INTERPRET=1")
    sets = {k: int(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.preset is None and args.spec.endswith("mamba2.rnn"):
        sets = {**SMALL, **sets}
    options = {"strategy": args.strategy, "chunk": args.chunk}
    model = build(args.spec, args.preset, sets, **options).to(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    saved, held = measure(model, args.B, args.T, dtype, args.device)
    longer = measure(model, args.B, 2 * args.T, dtype, args.device)[0]
    tokens = args.B * args.T
    lines, total, fixed = table(saved, longer, tokens)
    sizes = ", ".join(f"{a} {n}" for a, n in model.ir.sizes.items())
    run = f"B {args.B} × T {args.T}, {args.dtype}, {args.device}, {args.strategy} strategy"
    print(f"{args.spec} ({sizes}), {run}")
    print("\n".join(lines))
    print(f"\ntotal saved: {total:.1f} bytes/token, {fixed:.0f} bytes per layer (at T {args.T})")
    if held is not None:
        print(f"CUDA memory held after the forward (beyond x and y): {held / tokens:.1f} bytes/token")


if __name__ == "__main__":
    main()
