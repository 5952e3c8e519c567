"""Pass 2, configure: the values of the hypers and choices for one configuration.

A configuration is the spec's defaults, then a preset's settings, then ``--set`` overrides (strings
from the command line are read as numbers where they parse as one). A hyper's default may use other
hypers and follows their configured values. Every setting must name a hyper (a finite number) or a
choice (one of its values); ``dim`` must end up a positive integer. A preset may also name the LM's
``depth``, which is a model setting: ``preset_depth`` reads it, ``configure`` only checks it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from archdsl.errors import ArchdslError, did_you_mean
from archdsl.lang import spec as S
from archdsl.lang.declarations import Declarations
from archdsl.lang.sizes import evaluate

DEFAULT_DEPTH = 20

#: one setting to apply: (name, value, where it was written; None for a --set override)
Setting = tuple[str, object, object]


def configure(
    decl: Declarations,
    preset: str | None = None,
    overrides: Mapping[str, object] | None = None,
) -> tuple[dict, dict]:
    """Hyper values and choices for a preset and ``--set`` overrides (values may be strings)."""
    hypers: dict = {}  # hyper -> value; first the defaults, then the configured values
    choices = {c.name: _choice_default(c) for c in decl.choices.values()}
    explicit: dict = {}  # hyper -> the value a preset or an override sets
    origin = {h.name: h.span for h in decl.hypers.values()}  # hyper -> where its value was written

    def lookup(ref: S.Ref):
        if ref.name in hypers:
            return hypers[ref.name]
        raise ArchdslError(
            f"unknown name '{ref.name}' in a hyper default",
            ref.span,
            did_you_mean(ref.name, hypers, "hypers"),
        )

    for h in decl.hypers.values():
        hypers[h.name] = evaluate(h.value, lookup)
    for name, value, span in _settings(decl, preset, overrides, lookup):
        where = "" if span else f"--set {name}={overrides[name]}: "
        if name in decl.choices:
            opts = decl.choices[name].options
            if value not in opts:
                raise ArchdslError(
                    f"{where}'{value}' is not a value of choice '{name}'",
                    span,
                    did_you_mean(str(value), opts, "values"),
                )
            choices[name] = value
        elif name in decl.hypers:
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ArchdslError(f"{where}hyper '{name}' needs a finite number, found '{value}'", span)
            explicit[name], origin[name] = value, span
        else:
            raise ArchdslError(
                f"{where}unknown setting '{name}'; a setting names a hyper or a choice",
                span,
                did_you_mean(name, [*decl.hypers, *decl.choices], "hypers and choices"),
            )
    hypers.clear()  # a default that uses other hypers follows their configured values
    for h in decl.hypers.values():
        hypers[h.name] = explicit[h.name] if h.name in explicit else evaluate(h.value, lookup)
    dim = hypers["dim"]
    if not (isinstance(dim, (int, float)) and math.isfinite(dim) and float(dim).is_integer() and dim >= 1):
        where = "" if origin["dim"] else f"--set dim={dim}: "
        raise ArchdslError(f"{where}dim is {dim}; the model width must be a positive integer", origin["dim"])
    return hypers, choices


def _settings(
    decl: Declarations, preset: str | None, overrides: Mapping | None, lookup: Callable
) -> list[Setting]:
    """The preset's settings (evaluated over the default hypers), then the overrides."""
    settings: list[Setting] = []
    if preset is not None:
        if preset not in decl.presets:
            hint = did_you_mean(preset, decl.presets, "presets") or "this spec has no presets"
            raise ArchdslError(f"unknown preset '{preset}' in {decl.spec.name}", hint=hint)
        for s in decl.presets[preset].settings:
            if s.name == "depth":  # a model setting, read by preset_depth()
                _preset_depth_value(s)
                continue
            if isinstance(s.value, S.Ref) and s.name in decl.choices:
                settings.append((s.name, s.value.name, s.span))
            else:
                settings.append((s.name, evaluate(s.value, lookup), s.span))
    for k, v in (overrides or {}).items():
        settings.append((k, _parse_value(v) if isinstance(v, str) else v, None))
    return settings


def _choice_default(c: S.Choice) -> str:
    return c.default if c.default is not None else c.options[0]


def _parse_value(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _preset_depth_value(s: S.Setting) -> int:
    def no_names(ref: S.Ref):
        raise ArchdslError(f"a preset's depth is a number; found name '{ref.name}'", ref.span)

    value = evaluate(s.value, no_names)
    if not (isinstance(value, int) and value >= 1):
        raise ArchdslError(f"a preset's depth must be a positive integer, found {value}", s.span)
    return value


def preset_depth(decl: Declarations, preset: str | None) -> int | None:
    """The LM depth a preset names (``preset P { …, depth = 32 }``), or None."""
    if preset is None or preset not in decl.presets:
        return None
    return next((_preset_depth_value(s) for s in decl.presets[preset].settings if s.name == "depth"), None)
