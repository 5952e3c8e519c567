"""The Python API in one place: ``archdsl.Layer``, ``archdsl.LM``, ``archdsl.check``,
``archdsl.compile`` and ``archdsl.fit`` (``import archdsl`` loads this module, and torch, only when
one of them is first used).

A spec is named the way the command line names it: a bundled spec (``"e88"``), a ``.rnn`` file, or
the text of a spec itself. Hypers and choices are keyword arguments (``dim=1024, heads=8``); a
preset (``preset="E88_d12h32"``) is applied first and the keywords override it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from archdsl.errors import ArchdslError, did_you_mean
from archdsl.ir import LayerIR
from archdsl.lang.checker import CheckResult, check_spec, instantiate
from archdsl.lang.parser import parse, parse_file
from archdsl.lang.spec import SpecFile
from archdsl.lang.specs_path import resolve_spec
from archdsl.layer import RecurrentLayer


def load_spec(spec: str | Path) -> SpecFile:
    """A parsed spec from a bundled name, a ``.rnn`` path or spec text (anything with a newline)."""
    if isinstance(spec, str) and "\n" in spec:
        return parse(spec)
    return parse_file(resolve_spec(str(spec)))


def layer_ir(spec: str | Path | LayerIR, preset: str | None = None, **settings) -> LayerIR:
    """The checked IR of one configuration of a spec (raises ``ArchdslError`` naming file:line:col)."""
    if isinstance(spec, LayerIR):
        if preset is not None or settings:
            raise ArchdslError(
                "a LayerIR is already configured: give the spec's name to set a preset or hypers"
            )
        return spec
    return instantiate(load_spec(spec), preset, settings).layer


class Layer(RecurrentLayer):
    """A spec's layer as a ``torch.nn.Module``.

    >>> layer = archdsl.Layer("e88", preset="E88_d12h32", backend="triton")
    >>> layer = archdsl.Layer("my.rnn", dim=1024, heads=8)
    >>> y, state = layer(x)              # x [batch, time, dim] -> y [batch, time, dim]
    >>> y_t, state = layer.step(x_t, state)   # one token: x_t [batch, dim]

    ``backend``: ``"reference"`` (the PyTorch interpreter, any device) or ``"triton"`` (the compiled
    kernels; on the CPU only under ``TRITON_INTERPRET=1``). ``strategy``, ``chunk``, ``tile``,
    ``num_warps`` and ``products`` choose how the triton backend compiles (``archdsl compile
    --help``). ``seed`` makes the initialisation reproducible. Every other keyword sets a hyper or a
    choice of the spec.
    """

    def __init__(
        self,
        spec: str | Path | LayerIR,
        preset: str | None = None,
        *,
        backend: str = "reference",
        seed: int | None = None,
        strategy: str | None = None,
        chunk: int | None = None,
        tile: int | None = None,
        num_warps: int | None = None,
        products: str | None = None,
        **settings,
    ):
        options = {
            "strategy": strategy,
            "chunk": chunk,
            "tile": tile,
            "num_warps": num_warps,
            "products": products,
        }
        super().__init__(
            layer_ir(spec, preset, **settings),
            backend=backend,
            seed=seed,
            **{k: v for k, v in options.items() if v is not None},
        )


def LM(  # noqa: N802 (a constructor to its users)
    model: str = "e88",
    preset: str | None = None,
    *,
    dim: int | None = None,
    depth: int | None = None,
    params: int | None = None,
    backend: str = "reference",
    seed: int = 0,
    **settings,
):
    """The byte-level language model (``archdsl.lm.model.LanguageModel``) around a spec or a baseline.

    ``params`` solves the width for a parameter budget (``dim`` None); ``depth`` defaults to the
    preset's, else 20. ``lm(idx [B, T] int64) -> logits [B, T, 256]``; with spec layers,
    ``lm.generate(prompt, n)`` samples ``n`` more bytes."""
    from archdsl.lm.zoo import ModelConfig, build_model

    cfg = ModelConfig(
        model=str(model),
        preset=preset,
        sets=dict(settings),
        dim=dim,
        depth=depth,
        params=params,
        backend=backend,
        seed=seed,
    )
    return build_model(cfg)


def check(spec: str | Path) -> CheckResult:
    """Check a spec's defaults, every preset, every choice combination and its search space; returns
    the instances (``.default.layer`` is the IR) or raises ``ArchdslError`` at the first problem."""
    return check_spec(load_spec(spec))


def compile(  # noqa: A001 (archdsl.compile reads as the command it mirrors)
    spec: str | Path | LayerIR,
    preset: str | None = None,
    *,
    strategy: str | None = None,
    chunk: int | None = None,
    tile: int | None = None,
    num_warps: int | None = None,
    products: str | None = None,
    **settings,
):
    """The compiled cell of a spec: ``.strategy``, ``.hash``, ``.path`` (the generated Triton module),
    ``.describe()`` and ``cell(inputs, frontier, state0) -> (y, final states)``; as ``archdsl compile``."""
    from archdsl.codegen import build_cell

    return build_cell(layer_ir(spec, preset, **settings), chunk, tile, num_warps, strategy, products)


def fit(
    model: str = "e88",
    preset: str | None = None,
    *,
    dim: int | None = None,
    depth: int | None = None,
    params: int | None = None,
    backend: str = "reference",
    seed: int = 0,
    sets: dict | None = None,
    **options,
):
    """Train ``model`` in the byte-level LM, as ``archdsl train``; returns the ``TrainResult``.

    ``options`` are ``archdsl.train.trainer.TrainConfig``'s fields: a budget (``minutes``, ``steps`` or
    ``tokens``), ``data`` (a list of files), ``out`` (the run folder), ``batch``, ``seq``, ``lr``…
    ``sets`` holds the spec's hypers and choices (a name may clash with an option, e.g. ``seq``)."""
    from archdsl.lm.config import ModelConfig
    from archdsl.train.trainer import TrainConfig, train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in options:
        if key not in fields:
            raise ArchdslError(f"fit: unknown option '{key}'", hint=did_you_mean(key, fields, "options"))
    cfg = ModelConfig(
        model=str(model),
        preset=preset,
        sets=dict(sets or {}),
        dim=dim,
        depth=depth,
        params=params,
        backend=backend,
        seed=seed,
    )
    return train(cfg, TrainConfig(**options))
