"""What a ``RecurrentLayer`` shows its users: projection names taken from the spec, the old
positional names still loading, and the checks that turn a shape, dtype or device mistake into one
clear sentence instead of a torch error from deep inside a GEMM or a kernel.

A projection ``project x -> q[h, i], k[h, i], v[h, j]`` is the module ``proj.q_k_v`` (its weight
``proj.q_k_v.weight``, rows in the order of the outputs); archdsl before named it by position,
``proj.0``. Checkpoints with the positional names load unchanged (``rename_positional``).
"""

from __future__ import annotations

import torch
from torch import nn

from archdsl.errors import ArchdslError
from archdsl.ir import LayerIR, Op


class LayerInputError(ArchdslError, ValueError):
    """A tensor given to a layer does not fit it (shape, dtype, device, state)."""

    def __str__(self) -> str:  # a Python caller reads the sentence; the CLI adds "error: " itself
        return self.message


def projection_keys(layer: LayerIR) -> list[str]:
    """One module name per projection: its outputs joined by ``_`` (``q_k_v``), unique in the layer.

    A name that is an attribute of ``nn.ModuleDict`` (``keys``, ``type``) or ends in ``_`` gets one
    more ``_``; a name two projections would share gets the projection's position appended."""
    keys: list[str] = []
    for k, p in enumerate(layer.projections):
        key = "_".join(name for name, _ in p.outputs)
        if hasattr(ProjTable, key) or key.endswith("_"):
            key += "_"
        if key in keys:
            key = f"{key}_{k}"
        keys.append(key)
    return keys


class ProjTable(nn.ModuleDict):
    """The projections by name; ``table["0"]`` (a position, the old name) still finds the first."""

    def __getitem__(self, key: str) -> nn.Module:
        if key not in self._modules and key.isdigit() and int(key) < len(self._modules):
            return list(self._modules.values())[int(key)]
        return self._modules[key]


def rename_positional(keys: list[str], state_dict: dict, prefix: str) -> None:
    """Rename ``proj.<k>.*`` and ``proj_sn.<k>.*`` (positions, the names before) to the spec's names,
    in place, so that checkpoints written by an older archdsl load into the named modules."""
    for table in ("proj", "proj_sn"):
        for k, key in enumerate(keys):
            old, new = f"{prefix}{table}.{k}.", f"{prefix}{table}.{key}."
            for name in [n for n in state_dict if n.startswith(old)]:
                if new + name[len(old) :] not in state_dict:
                    state_dict[new + name[len(old) :]] = state_dict.pop(name)


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_input(layer: LayerIR, weight: torch.Tensor, x, state, steps: bool = True) -> None:
    """Refuse, with one sentence, an input the layer cannot run: ``x`` [batch, time, dim] (``steps``)
    or [batch, dim] (one step), floating point, on the weights' device, in their dtype unless autocast
    is on; ``state`` a dict of the spec's states, each [batch, *its axes]."""
    name, dim = layer.name, layer.dim
    want = f"[batch, time, {dim}]" if steps else f"[batch, {dim}]"
    if not isinstance(x, torch.Tensor):
        raise LayerInputError(f"layer '{name}': x must be a torch.Tensor {want}, found {type(x).__name__}")
    if x.dim() != (3 if steps else 2):
        n = 3 if steps else 2
        raise LayerInputError(f"layer '{name}': x must be {want} ({n} dimensions), found shape {_shape(x)}")
    if x.shape[-1] != dim:
        raise LayerInputError(
            f"layer '{name}': the last dimension of x must be the layer width {dim}, found {_shape(x)}"
        )
    if steps and x.shape[1] == 0:
        raise LayerInputError(f"layer '{name}': x has no time steps (shape {_shape(x)})")
    if not x.is_floating_point():
        raise LayerInputError(f"layer '{name}': x must be floating point, found {x.dtype}")
    if x.device != weight.device:
        raise LayerInputError(
            f"layer '{name}': x is on {x.device} but the layer's weights are on {weight.device}; "
            f"move one of them (layer.to(x.device))"
        )
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise LayerInputError(
            f"layer '{name}': x is {x.dtype} but the layer's weights are {weight.dtype}; convert one "
            f"(layer.to({x.dtype}) or x.to({weight.dtype})), or run under torch.autocast"
        )
    check_state(layer, x, state, x.shape[0])


#: the state entry that carries a layer's last inputs, for a spec that reads earlier tokens (``shift``,
#: ``conv``): a continued sequence's convolutions see the tokens before it (not an identifier, so it
#: never meets a spec's state name)
HISTORY = "x:history"


def lookback(layer: LayerIR) -> int:
    """How many earlier tokens the spec's sequence values read (0: none): the longest chain of shifts
    from the input to a sequence value, each shift counting the tokens it reaches back (a convolution
    over a window of 4, three). Shifts side by side (gdn's three convolutions) reach no further than
    one; a shift of a value that already reaches back (a sequence value, or a projection of one, read
    by name) adds to its reach."""
    if not layer.sequence:
        return 0
    g = layer.graph
    source = {o: p.source for p in layer.projections for o, _ in p.outputs if p.source != "x"}
    reach: dict[int, int] = {}

    def of_node(i: int) -> int:
        if i not in reach:
            n = g[i]
            step = (1 if n.attr is None else layer.sizes[n.attr] - 1) if n.op is Op.SHIFT else 0
            if n.op is Op.INPUT:
                reach[i] = step + of_name(n.attr)
            else:
                reach[i] = step + max((of_node(a) for a in n.args), default=0)
        return reach[i]

    def of_name(name: str) -> int:
        if name in layer.sequence:
            return of_node(layer.sequence[name])
        if name in source:  # a projection of a per-token value: that value's reach
            return of_node(layer.pre[source[name]])
        return 0  # x, or a projection of x

    return max(of_name(name) for name in layer.sequence)


#: the state entry that counts the tokens a layer has seen, [batch] int64, for a spec that reads the
#: token's position (``position()``): a continued sequence's positions go on from it (0 when absent)
POSITION = "x:position"


def reads_position(layer: LayerIR) -> bool:
    """Does a sequence value of the spec read the token's position?"""
    g = layer.graph
    return any(g[i].op is Op.POSITION for i in g.ancestors(layer.sequence.values()))


def _check_position(layer: LayerIR, v, x: torch.Tensor, batch: int) -> None:
    if not reads_position(layer):
        raise LayerInputError(f"layer '{layer.name}': state '{POSITION}' is for specs that read position()")
    ok = isinstance(v, torch.Tensor) and v.dim() == 1 and v.shape[0] == batch
    if not ok or v.is_floating_point() or v.is_complex() or v.dtype == torch.bool:
        found = f"{v.dtype} {_shape(v)}" if isinstance(v, torch.Tensor) else type(v).__name__
        raise LayerInputError(
            f"layer '{layer.name}': state '{POSITION}' must be [batch] = [{batch}] integers (the tokens "
            f"seen before), found {found}"
        )
    if v.device != x.device:
        raise LayerInputError(f"layer '{layer.name}': state '{POSITION}' is on {v.device}, x on {x.device}")


def _check_history(layer: LayerIR, v, x: torch.Tensor, batch: int) -> None:
    most = lookback(layer)
    if not most:
        name = layer.name
        raise LayerInputError(f"layer '{name}': state '{HISTORY}' is for specs that read earlier tokens")
    if not isinstance(v, torch.Tensor) or v.dim() != 3 or v.shape[0] != batch or v.shape[2] != layer.dim:
        found = _shape(v) if isinstance(v, torch.Tensor) else type(v).__name__
        raise LayerInputError(
            f"layer '{layer.name}': state '{HISTORY}' must be [batch, ≤ {most}, {layer.dim}], found {found}"
        )
    if v.shape[1] > most or v.device != x.device:
        raise LayerInputError(
            f"layer '{layer.name}': state '{HISTORY}' holds at most {most} tokens on x's device, found "
            f"{v.shape[1]} on {v.device}"
        )


def check_state(layer: LayerIR, x: torch.Tensor, state, batch: int) -> None:
    """``state``: None, or a dict of the spec's states, each [batch, *its axes] on x's device."""
    if state is None:
        return
    name = layer.name
    if not isinstance(state, dict):
        raise LayerInputError(
            f"layer '{name}': state must be a dict of the spec's states "
            f"({', '.join(layer.states)}), found {type(state).__name__}"
        )
    unknown = [s for s in state if s not in layer.states and s not in (HISTORY, POSITION)]
    if unknown:
        raise LayerInputError(
            f"layer '{name}': unknown state '{unknown[0]}'; the spec's states are {', '.join(layer.states)}"
        )
    for s, v in state.items():
        if v is None:
            continue
        if s == HISTORY:
            _check_history(layer, v, x, batch)
            continue
        if s == POSITION:
            _check_position(layer, v, x, batch)
            continue
        want = (batch, *(layer.sizes[a] for a in layer.states[s]))
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != want:
            found = _shape(v) if isinstance(v, torch.Tensor) else type(v).__name__
            axes = ", ".join(layer.states[s])
            raise LayerInputError(
                f"layer '{name}': state '{s}' must be [batch, {axes}] = {list(want)}, found {found}"
            )
        if v.device != x.device:
            raise LayerInputError(f"layer '{name}': state '{s}' is on {v.device}, x on {x.device}")
