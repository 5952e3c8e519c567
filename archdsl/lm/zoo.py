"""``build_model``: the LM of a ``ModelConfig``, a spec or a baseline.

A spec is resolved once per build (read, parsed, checked: ``budget.spec_layer``) and the checked
layer is handed to every part that needs it: the mixers, the info, the parameter count. A baseline
is its constructor beside its count (``archdsl.lm.baselines``).
"""

from __future__ import annotations

import dataclasses
import warnings

import torch

from archdsl.errors import ArchdslError
from archdsl.ir import LayerIR
from archdsl.lm import budget
from archdsl.lm.baselines import BASELINES
from archdsl.lm.blocks import NORMS, TakeFirst, layer_norm, rms_norm
from archdsl.lm.config import SPEC_BASELINES, ModelConfig
from archdsl.lm.model import LanguageModel


def build_model(cfg: ModelConfig) -> LanguageModel:
    """The LM for a config: a spec or a baseline; solves the width first when ``params`` is set."""
    if cfg.depth < 1:
        raise ArchdslError(f"depth must be at least 1, found {cfg.depth}")
    if cfg.dim is None and cfg.params is not None:
        cfg = budget.solve(cfg, cfg.params, cfg.tolerance)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.model in BASELINES:
            check_products(cfg)  # a spec's settings: refused here
            check_keep_states(cfg)
            counted = budget.baseline_sizes(cfg)
            model = baseline_lm(cfg, counted)
        else:
            _check_backend(cfg.backend)
            layer = budget.spec_layer(cfg)  # the one resolution of the spec for this model
            check_products(cfg, layer)
            check_keep_states(cfg, layer)
            counted = budget.spec_sizes(cfg, layer)
            model = spec_lm(cfg, layer)
    if model.info["params"] != counted.params:  # a package version with other shapes than we count
        warnings.warn(
            f"{cfg.model}: built {model.info['params']:,} parameters, the budget solver counts "
            f"{counted.params:,}",
            stacklevel=2,
        )
        model.info["params_counted"] = counted.params
    model.info["config"] = dataclasses.asdict(cfg)
    return model


def _check_backend(backend: str) -> None:
    from archdsl.layer import BACKENDS

    if backend not in BACKENDS:
        raise ArchdslError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")


def check_products(cfg: ModelConfig, layer: LayerIR | None = None) -> None:
    """An ArchdslError, before any training, where ``cfg.products`` cannot apply to this model
    (``layer``: its spec's checked layer, read here when None)."""
    if cfg.products is not None:
        _check_kernel_setting(cfg, f"--products {cfg.products}", layer, products=cfg.products)


def check_keep_states(cfg: ModelConfig, layer: LayerIR | None = None) -> None:
    """An ArchdslError, before any training, where ``cfg.keep_states`` cannot apply to this model."""
    if cfg.keep_states:
        _check_kernel_setting(cfg, "--keep-states", layer, keep_states=True)


def _check_kernel_setting(cfg: ModelConfig, flag: str, layer: LayerIR | None, **setting) -> None:
    """A compiled kernels' setting (``flag`` on the command line) refused for a baseline, without the
    triton backend, or where the spec's strategy does not read it (``codegen.check_settings``)."""
    from archdsl.codegen import check_settings

    if cfg.model in BASELINES:
        raise ArchdslError(f"{flag}: a spec's setting; '{cfg.model}' is a baseline")
    if cfg.backend != "triton":
        raise ArchdslError(f"{flag}: the compiled kernels' setting; add --backend triton")
    check_settings(layer or budget.spec_layer(cfg), **setting)


def spec_lm(cfg: ModelConfig, layer: LayerIR) -> LanguageModel:
    """One ``RecurrentLayer`` of the checked ``layer`` per layer of the LM (each with its own
    initialisation); the bundled lstm/gru specs are baselines, with variants.md §5's LayerNorm."""
    mixers, info = spec_mixers(cfg, layer)
    if cfg.model in SPEC_BASELINES:
        info["kind"] = "baseline"
        return LanguageModel(layer.dim, mixers, layer_norm, info)
    return LanguageModel(layer.dim, mixers, rms_norm, info)


def spec_mixers(cfg: ModelConfig, layer: LayerIR) -> tuple[list, dict]:
    from archdsl.layer import RecurrentLayer

    options = {"products": cfg.products} if cfg.products else {}
    if cfg.keep_states:
        options["chunk"] = 1  # a checkpoint at every step
    mixers = [TakeFirst(RecurrentLayer(layer, backend=cfg.backend, **options)) for _ in range(cfg.depth)]
    info = {
        "model": cfg.model,
        "kind": "spec",
        "spec": str(budget.spec_path(cfg.model)),
        "preset": cfg.preset,
        "dim": layer.dim,
        "depth": cfg.depth,
        "expansion": layer.hypers.get("expansion"),
        "heads": layer.hypers.get("heads"),
        "n_state": layer.hypers.get("n"),
        "state_per_layer": layer.state_size(),
        "backend": cfg.backend,
        "hypers": dict(layer.hypers),
        "choices": dict(layer.choices),
        "spec_text": layer.source,
        "kernel_hash": layer.fingerprint(),
    }
    return mixers, info


def baseline_lm(cfg: ModelConfig, s: budget.Sizes) -> LanguageModel:
    """A baseline's LM at the sizes its count gives (``cfg.dim`` or the research code's 100M width)."""
    base = BASELINES[cfg.model]
    mixers, path = base.build(s.dim, cfg.depth, budget.knobs(cfg))
    info = {
        "model": cfg.model,
        "kind": "baseline",
        "dim": s.dim,
        "depth": s.depth,
        "expansion": s.expansion,
        "heads": s.heads,
        "n_state": s.n_state,
        "state_per_layer": s.state_per_layer,
        "backend": path,
        "spec_text": None,
        "kernel_hash": None,
    }
    return LanguageModel(s.dim, mixers, NORMS[base.norm], info)
