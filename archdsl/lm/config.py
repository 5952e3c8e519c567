"""``ModelConfig``: what the byte-level LM is (a spec or a baseline) and how big, and where its spec is.

No torch here: the budget solver, ``archdsl bench --dry-run`` and the search's feasibility read it too.
A spec is found by name or path (``spec_path``) and parsed once per file version (``load_spec``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from archdsl.errors import ArchdslError, did_you_mean
from archdsl.lang.checker import DEFAULT_DEPTH, declarations, preset_depth
from archdsl.lang.parser import parse_file
from archdsl.lang.specs_path import bundled, resolve_spec
from archdsl.lm.baselines import BASELINES

VOCAB = 256  # bytes
#: bundled specs that are baselines: their LM is variants.md §5's LayerNorm wrapper
SPEC_BASELINES = ("lstm", "gru")
MODELS = (*BASELINES, *SPEC_BASELINES)


@dataclass
class ModelConfig:
    model: str = "e88"  # a spec path / bundled spec name, or a baseline (baselines.BASELINES)
    preset: str | None = None  # a preset of the spec
    sets: dict[str, object] = field(default_factory=dict)  # spec hypers/choices, or a baseline's knobs
    dim: int | None = None  # width; None: the preset's / spec's default, or solved from `params`
    depth: int | None = None  # layers (llama: transformer blocks); None: the preset's depth, else 20
    params: int | None = None  # parameter budget; the width is solved when dim is None
    align: int = 1  # the solved width is a multiple of this (128 in the research code)
    backend: str = "reference"  # spec cell backend: "reference" | "triton"
    seed: int = 0  # initialisation seed
    #: a spec's chunked kernels' products under bf16/fp16 (``archdsl compile --products``): None (tf32)
    #: or "half"; the triton backend and the chunked strategy only
    products: str | None = None
    #: the loop strategy's forward keeps every step's state (a checkpoint stride of 1, ``archdsl
    #: compile --chunk 1``): its backward recomputes nothing, for B x T states of memory a layer
    keep_states: bool = False
    tolerance: float = 0.1  # give up when no width lands within this fraction of `params`
    # (±10%: the research search's rule; the nearest count always wins)

    def __post_init__(self):
        if self.depth is None:
            self.depth = _preset_depth(self) or DEFAULT_DEPTH


def is_baseline(name: str) -> bool:
    return name in BASELINES or name in SPEC_BASELINES


def spec_path(name: str) -> Path:
    try:
        return resolve_spec(name)
    except ArchdslError:
        if name.endswith(".rnn") or Path(name).exists():
            raise
        raise ArchdslError(
            f"'{name}' is neither a spec file, a bundled spec nor a baseline",
            hint=did_you_mean(name, [*bundled(), *BASELINES], "specs and baselines"),
        ) from None


@functools.lru_cache(maxsize=64)
def _parse(path: str, mtime_ns: int):
    return parse_file(path)


def load_spec(name: str):
    """The parsed spec of a name or path (parsed again only when the file changes)."""
    p = spec_path(name)
    return _parse(str(p), p.stat().st_mtime_ns)


def _preset_depth(cfg: ModelConfig) -> int | None:
    """A spec preset may name its depth (``depth = 32``); errors surface later, where they are located."""
    if cfg.preset is None or is_baseline(cfg.model):
        return None
    try:
        return preset_depth(declarations(load_spec(cfg.model)), cfg.preset)
    except ArchdslError:
        return None
