"""Identifiers in generated source: no name that comes from a spec can meet another name.

A generated kernel holds two kinds of identifiers:

- the emitter's own vocabulary, fixed: program ids and loop counters (``i_b``, ``t``), sizes
  (``T``, ``CHUNK``), helpers (``_tanh``), modules (``tl``), values of the step (``b12``: a letter
  and digits, never an underscore);
- names derived from the spec: a role prefix and the spec's name (``p_k`` the pointer of input
  ``k``, ``b_S`` the block of state ``S``, ``b_dS`` its cotangent, ``o_h`` the offsets of axis ``h``).

Every derived name is handed out by a ``Namespace``, keyed by what it denotes (role, spec name): it
gets its readable form unless the emitter's vocabulary, Python or an earlier name of the same kernel
already has it, and a numbered suffix otherwise. So ``axis b`` gets ``i_b_1`` beside the batch index
``i_b``, and the cotangent of ``C`` and a state named ``dC`` get ``b_dC`` and ``b_dC_1``: distinct by
construction, whatever the spec calls things.
"""

from __future__ import annotations

import builtins
import keyword
import re

# The emitter's own identifiers that contain an underscore. Its others have none (``t``, ``pid``,
# ``NC``, ``b12``, ``acc0``), while every derived name has one after its role prefix, so those cannot meet.
EMITTER = frozenset(
    ("i_b", "i_s", "i_c", "i_r", "i_bb", "i_t", "t_lo", "t_hi", "o__b", "l__b", "m__b", "p_sync")
    + ("USE_H0", "USE_DHT", "BLOCK_B", "BLOCK_K", "DOT_T", "DOT_PREC")
    + ("_tanh", "_log1p", "_softplus", "_grid_arrive", "_grid_wait")
)
RESERVED = EMITTER | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))

_NOT_WORD = re.compile(r"\W")


def identifier(text: str) -> str:
    """``text`` as a Python identifier: the cotangent mark goes (``p_d:y`` -> ``p_dy``) and other
    non-word characters become ``_``."""
    out = _NOT_WORD.sub("_", text.replace(":", ""))
    return out if out[:1].isalpha() or out[:1] == "_" else "_" + out


class Namespace:
    """The derived names of one kernel: ``ns(key, preferred) -> identifier``, the same identifier for
    the same key every time, a different one for every other key."""

    def __init__(self, reserved=RESERVED, prefixed: bool = True):
        self.taken: set[str] = set(reserved)
        self.given: dict[object, str] = {}
        self.prefixed = prefixed  # derived names carry a role prefix (kernels); launchers' need not

    def __call__(self, key, preferred: str) -> str:
        if key in self.given:
            return self.given[key]
        base = identifier(preferred)
        assert not self.prefixed or "_" in base.strip("_"), f"derived names carry a role prefix: {base!r}"
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        self.given[key] = name
        return name


# the kinds of parallel kernels a module can hold beside the loop's (their names and aliases derive
# from the layer's name, so a layer may not be called like one of them)
_MODULE_WORDS = {"token", "readout", "persistent", "fwd", "bwd", "triton", "tl"}


def module_name(layer_name: str) -> str:
    """The layer's name as the stem of its generated module and kernels: an identifier that starts
    with a letter and is none of the module's own words (``2layer`` -> ``rnn_2layer``,
    ``e88.v2`` -> ``e88_v2``, a name with a newline -> underscores)."""
    ident = _NOT_WORD.sub("_", layer_name) or "rnn"
    if not ident[0].isalpha() or ident in _MODULE_WORDS or keyword.iskeyword(ident):
        ident = "rnn_" + ident
    return ident
