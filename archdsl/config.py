"""One encoding of a configuration: ``key=value`` items over a dataclass's fields.

``apply_overrides(cfg, ["lr=1e-3", "sets.heads=8"])`` sets fields by name, each value read as its
field's type (``int``, ``float``, ``bool``, ``str``, ``X | None``, ``list[str]``, ``tuple[float, …]``;
a ``dict`` field takes ``name.key=value`` per entry). ``to_argv(cfg)`` is the inverse: the items of
the fields that differ from the defaults, so ``apply_overrides(type(cfg)(), to_argv(cfg)) == cfg``.
The trainer's flags, ``archdsl bench``, the search's trial jobs and its reproduce commands all speak
this one encoding (docs/training.md, "One configuration encoding").

A bad item is one ``error:`` line naming the flag it came from, the key, what was expected and what
was found; an unknown key gets the nearest field names.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import re
import types
import typing

from archdsl.errors import ArchdslError

NONE = "none"
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_COUNT = re.compile(r"([0-9]*\.?[0-9]+(?:[eE]\+?[0-9]+)?)([kKmMbBgGtT]?)")
_SCALE = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


@functools.cache
def field_types(cls: type) -> dict[str, object]:
    """The init fields of a dataclass and their (evaluated) types, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


# ---- one value -----------------------------------------------------------------------------------
def _optional(tp) -> tuple[object, bool]:
    """(the type without None, whether None is allowed)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else object), len(args) < len(typing.get_args(tp))
    return tp, False


def expected(tp) -> str:
    """What a value of ``tp`` looks like, for messages."""
    inner, optional = _optional(tp)
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if inner is bool:
        text = "true or false"
    elif inner is int:
        text = "an integer (100, 250K, 1M)"
    elif inner is float:
        text = "a number"
    elif origin is list:
        text = "a comma-separated list"
    elif origin is tuple and args[-1:] == (Ellipsis,):
        text = "comma-separated numbers"
    elif origin is tuple:
        text = f"{len(args)} comma-separated numbers"
    elif origin is dict:
        text = "a JSON object, or KEY.NAME=VALUE per entry"
    else:
        text = "text"
    return text + (f" or {NONE}" if optional else "")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    m = _COUNT.fullmatch(text)  # a count: 250K, 1.5M, 1e6
    value = float(m.group(1)) * _SCALE[m.group(2).upper()] if m else math.nan
    if not (math.isfinite(value) and value == int(value)):
        raise ValueError(text)
    return int(value)


def _quoted(text: str) -> bool:
    return len(text) > 1 and text[0] == text[-1] == '"'


def literal(text: str):
    """A value of an untyped entry (a spec's hyper or choice): a number when it reads as one."""
    if _quoted(text):
        return json.loads(text)
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def parse_value(tp, text: str):
    """``text`` read as a value of type ``tp``; ValueError when it is not one."""
    inner, optional = _optional(tp)
    if optional and text.lower() == NONE:
        return None
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if inner is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise ValueError(text)
        return text.lower() in _TRUE
    if inner is int:
        return _int(text)
    if inner is float:
        return float(text)
    if inner is str:
        return json.loads(text) if _quoted(text) else text
    if origin in (list, tuple):
        items = json.loads(text) if text.startswith("[") else (text.split(",") if text else [])
        items = [str(i) if isinstance(i, str) else json.dumps(i) for i in items]
        if origin is list:
            return [parse_value(args[0], i) for i in items]
        if args[-1:] == (Ellipsis,):
            return tuple(parse_value(args[0], i) for i in items)
        if len(items) != len(args):
            raise ValueError(text)
        return tuple(parse_value(a, i) for a, i in zip(args, items))
    if origin is dict:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(text)
        return value
    return literal(text)


def format_value(value, tp=object) -> str:
    """The text ``parse_value(tp, …)`` reads back as ``value``."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        inner, optional = _optional(tp)
        if inner is str:
            plain = not (optional and value.lower() == NONE)
        else:  # an untyped entry reads numbers as numbers; a typed field reads its text (a count, 250K)
            plain = literal(value) == value or inner is not object
        return value if plain and not _quoted(value) else json.dumps(value)
    if isinstance(value, (list, tuple)):
        parts = [format_value(v) for v in value]
        plain = all(p and "," not in p and not p.startswith(("[", '"')) for p in parts)
        return ",".join(parts) if plain else json.dumps(list(value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


# ---- a configuration -----------------------------------------------------------------------------
def unknown_key(flag: str, item: str, name: str, known) -> ArchdslError:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    guess = "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?" if close else ""
    return ArchdslError(f"{flag} {item}: unknown key '{name}'{guess}", hint="known keys: " + ", ".join(known))


def parse_item(cfg, item: str, flag: str = "--config") -> tuple[str, str | None, object]:
    """``key=value`` -> (field, dict entry or None, value), checked against the fields of ``cfg``."""
    if "=" not in item:
        raise ArchdslError(f"{flag} expects KEY=VALUE, found '{item}'")
    key, text = (s.strip() for s in item.split("=", 1))
    name, _, entry = key.replace("-", "_").partition(".")
    kinds = field_types(cfg if isinstance(cfg, type) else type(cfg))
    if name not in kinds:
        raise unknown_key(flag, item, name, kinds)
    tp = kinds[name]
    if entry:
        if typing.get_origin(_optional(tp)[0]) is not dict:
            raise ArchdslError(f"{flag} {item}: '{name}' has no entries ({name} expects {expected(tp)})")
        return name, entry, literal(text)
    try:
        return name, None, parse_value(tp, text)
    except (ValueError, json.JSONDecodeError):
        raise ArchdslError(f"{flag} {item}: {name} expects {expected(tp)}, found '{text}'") from None


def apply_overrides(cfg, items, flag: str = "--config"):
    """A copy of ``cfg`` with each ``key=value`` of ``items`` applied in order (later ones win).

    ``cfg`` is a dataclass instance (the fields not named keep their values) or a dataclass type
    (the fields not named take their defaults, and ``__post_init__`` sees only the named ones)."""
    changes: dict[str, object] = {}
    for item in items:
        name, entry, value = parse_item(cfg, item, flag)
        if entry is None:
            changes[name] = value
            continue
        current = changes.get(name, None if isinstance(cfg, type) else getattr(cfg, name))
        changes[name] = {**(current or {}), entry: value}
    return cfg(**changes) if isinstance(cfg, type) else dataclasses.replace(cfg, **changes)


def to_argv(cfg, base=None, always: tuple[str, ...] = ()) -> list[str]:
    """The ``key=value`` items that turn ``base`` (default: the type's defaults) into ``cfg``;
    the fields in ``always`` are written even where they equal the base."""
    base = type(cfg)() if base is None else base
    out: list[str] = []
    for name, tp in field_types(type(cfg)).items():
        value, was = getattr(cfg, name), getattr(base, name)
        if value == was and name not in always:
            continue
        if isinstance(value, dict) and isinstance(was, dict) and set(was) <= set(value):
            out += [f"{name}.{k}={format_value(v)}" for k, v in value.items() if k not in was or was[k] != v]
        else:
            out.append(f"{name}={format_value(value, tp)}")
    return out
