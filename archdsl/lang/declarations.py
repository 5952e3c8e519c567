"""Pass 1, declarations: the facts of a spec that hold in every configuration.

``declarations`` walks the whole file once, the branches of every ``if`` included, and collects the
hypers, choices, presets and search ranges. It checks that each is declared once and at the top level,
that a choice's default is one of its values, and that the spec declares its model width ``dim``.
Nothing here evaluates an expression: ``configure`` (``config``) gives the hypers their values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from archdsl.errors import ArchdslError, Span, did_you_mean
from archdsl.lang import spec as S


@dataclass
class Declarations:
    """The configuration-independent facts of a spec: hypers, choices, presets, search space."""

    spec: S.SpecFile
    hypers: dict[str, S.Hyper] = field(default_factory=dict)  # in declaration order
    choices: dict[str, S.Choice] = field(default_factory=dict)
    presets: dict[str, S.Preset] = field(default_factory=dict)
    search: list[S.Range] = field(default_factory=list)


def walk(body, top=True):
    """Every statement of ``body`` with whether it is at the top level (not inside an ``if``)."""
    for st in body:
        yield st, top
        if isinstance(st, S.If):
            yield from walk(st.then, False)
            yield from walk(st.otherwise, False)


def declarations(spec: S.SpecFile) -> Declarations:
    d = Declarations(spec)
    for st, top in walk(spec.body):
        if isinstance(st, (S.Hyper, S.Choice, S.Preset, S.Search)) and not top:
            kind = type(st).__name__.lower()
            raise ArchdslError(f"a {kind} must be declared at the top level, not inside 'if'", st.span)
        if isinstance(st, (S.Hyper, S.Choice)):
            if st.name in d.hypers or st.name in d.choices:
                first = (d.hypers.get(st.name) or d.choices[st.name]).span
                raise ArchdslError(f"'{st.name}' is defined twice; first on line {first.line}", st.span)
            (d.hypers if isinstance(st, S.Hyper) else d.choices)[st.name] = st
        if isinstance(st, S.Choice):
            _check_choice(st)
        elif isinstance(st, S.Preset):
            if st.name in d.presets:
                raise ArchdslError(
                    f"preset '{st.name}' is defined twice; first on line {d.presets[st.name].span.line}",
                    st.span,
                )
            d.presets[st.name] = st
        elif isinstance(st, S.Search):
            for r in st.ranges:
                if any(r.name == other.name for other in d.search):
                    raise ArchdslError(
                        f"'{r.name}' has two search ranges", r.span, "give each name one range"
                    )
                d.search.append(r)
    if "dim" not in d.hypers:
        raise ArchdslError(
            "a spec must declare 'hyper dim = …' (the model width)",
            file_span(spec),
            "add for example: hyper dim = 512",
        )
    return d


def _check_choice(st: S.Choice) -> None:
    if len(set(st.options)) != len(st.options):
        twice = next(o for o in st.options if st.options.count(o) > 1)
        raise ArchdslError(f"choice '{st.name}' lists '{twice}' twice", st.span)
    if st.default is not None and st.default not in st.options:
        raise ArchdslError(
            f"default '{st.default}' of choice '{st.name}' is not one of its values",
            st.span,
            did_you_mean(st.default, st.options, "values"),
        )


def file_span(spec: S.SpecFile, at_end: bool = False) -> Span:
    """Where a fact about the whole file is reported: its header or first line (or last statement)."""
    if at_end and spec.body:
        return spec.body[-1].span
    if spec.header_span is not None:
        return spec.header_span
    first = spec.source.splitlines()[0] if spec.source.strip() else ""
    return Span(Path(spec.path).name, 1, 1, 1, len(first) + 1)
