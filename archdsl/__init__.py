"""archdsl: recurrent layers written as ``.rnn`` specs, compiled to fused Triton kernels.

The Python API (docs/api.md)::

    import archdsl
    layer = archdsl.Layer("e88", preset="E88_d12h32", backend="triton")   # a torch.nn.Module
    y, state = layer(x)                      # x [batch, time, dim]
    y_t, state = layer.step(x_t, state)      # one token, x_t [batch, dim]
    lm = archdsl.LM("e88", params=20_000_000, depth=10)
    archdsl.check("my.rnn"); archdsl.compile("my.rnn", dim=1024); archdsl.fit("e88", steps=100)
    lm = archdsl.load_run("runs/demo")      # a finished run, at the weights its evaluation scored

The names load on first use (torch is imported then, not by ``import archdsl``), so the command line's
``archdsl check`` stays free of torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Layer": "archdsl.api",
    "LM": "archdsl.api",
    "check": "archdsl.api",
    "compile": "archdsl.api",
    "fit": "archdsl.api",
    "load_spec": "archdsl.api",
    "layer_ir": "archdsl.api",
    "RecurrentLayer": "archdsl.layer",
    "LayerInputError": "archdsl.layer_io",
    "LanguageModel": "archdsl.lm.model",
    "ModelConfig": "archdsl.lm.config",
    "build_model": "archdsl.lm.zoo",
    "TrainConfig": "archdsl.train.config",
    "TrainResult": "archdsl.train.trainer",
    "ArchdslError": "archdsl.errors",
    "load_run": "archdsl.train.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    raise AttributeError(f"module 'archdsl' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
