"""The search space: each model's ``search { … }`` block, narrowed or widened by flags.

A point of the space is a :class:`Candidate` (model, spec settings, depth, learning rate); the width is
never searched directly but solved from the parameter budget, so every trial sits at the budget.
Several models in one study make the model a categorical choice; each spec's own hypers and choices
are then named ``MODEL.NAME`` so that two specs never share a distribution by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archdsl.config import literal
from archdsl.errors import ArchdslError, did_you_mean
from archdsl.lang.checker import MODEL_KNOBS, SearchDim, declarations, search_space
from archdsl.lang.parser import parse_file
from archdsl.lang.specs_path import bundled, is_spec, resolve_spec
from archdsl.lm.budget import BASELINES

#: what a search may range over besides a model's own hypers and choices (the width is solved)
KNOBS = tuple(k for k in MODEL_KNOBS if k != "dim")

DEFAULT_MODEL = "e88"
DEFAULT_DEPTH = 20
DEFAULT_LR = 3e-4


@dataclass(frozen=True)
class Candidate:
    """One sampled configuration, before the width is solved."""

    model: str
    sets: dict = field(default_factory=dict)  # spec hypers and choices
    depth: int = DEFAULT_DEPTH
    lr: float = DEFAULT_LR
    dim: int | None = None  # the solved width, when known (a re-run of a finished trial)


@dataclass
class ModelSpace:
    """The dimensions of one model: spec hypers/choices and the model-level knobs."""

    model: str
    is_spec: bool
    names: frozenset = frozenset()  # hypers and choices the spec declares
    options: dict = field(default_factory=dict)  # choice name -> its values
    dims: dict[str, SearchDim] = field(default_factory=dict)


#: a bound or value as written: an int, else a float, else the text (``archdsl.config.literal``)
number = literal


def parse_range(name: str, text: str) -> SearchDim:
    """``4:64`` (ints), ``1e-4:3e-3:log``, ``16,32,64`` (a set) or ``32`` (fixed) -> a SearchDim."""
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        log = len(parts) == 3 and parts[2] == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise ArchdslError(f"--{name} '{text}': expected LOW:HIGH or LOW:HIGH:log")
        low, high = number(parts[0]), number(parts[1])
        if isinstance(low, str) or isinstance(high, str):
            raise ArchdslError(f"--{name} '{text}': the bounds of a range must be numbers")
        if low >= high:
            raise ArchdslError(f"--{name} '{text}': empty range ({low} is not below {high})")
        if log and low <= 0:
            raise ArchdslError(f"--{name} '{text}': a log range needs a positive lower bound")
        kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
        return SearchDim(name, kind, low, high, log)
    values = tuple(number(v.strip()) for v in text.split(",") if v.strip())
    if not values:
        raise ArchdslError(f"--{name}: no values given")
    if len(set(values)) != len(values):
        raise ArchdslError(f"--{name} '{text}': a value is listed twice")
    return SearchDim(name, "categorical", values=values)


def model_space(model: str) -> ModelSpace:
    """A spec's declared space, or a baseline's knobs (nothing searched unless a flag says so)."""
    if model in BASELINES:
        return ModelSpace(model, False, frozenset(BASELINES[model].knobs))
    if not is_spec(model):
        raise ArchdslError(
            f"'{model}' is neither a spec file, a bundled spec nor a baseline",
            hint=did_you_mean(model, [*bundled(), *BASELINES], "specs and baselines"),
        )
    spec = parse_file(resolve_spec(model))
    decl = declarations(spec)
    options = {c.name: tuple(c.options) for c in decl.choices.values()}
    # the width is solved from the budget, never searched
    dims = {d.name: d for d in search_space(spec) if d.name != "dim"}
    return ModelSpace(model, True, frozenset({*decl.hypers, *decl.choices} - {"dim"}), options, dims)


class Space:
    """The models and their dimensions, with flag overrides applied; samples Optuna trials."""

    def __init__(
        self, models: list[str], overrides: dict[str, SearchDim] | None = None, fixed: dict | None = None
    ):
        models = list(models) or [DEFAULT_MODEL]
        if len(set(models)) != len(models):
            raise ArchdslError("a model is listed twice")
        self.models = [model_space(m) for m in models]
        self.fixed = dict(fixed or {})
        for name, dim in (overrides or {}).items():
            self._override(name, dim)
        for name in self.fixed:
            self._fix(name)

    def _applies(self, ms: ModelSpace, name: str) -> bool:
        return name in KNOBS or name in ms.names

    def _known(self) -> list[str]:
        return sorted({*KNOBS, *(n for ms in self.models for n in ms.names)})

    def _override(self, name: str, dim: SearchDim) -> None:
        if name == "dim":
            raise ArchdslError(
                "the width is solved from --budget, not searched",
                hint="search heads, n, depth or the spec's choices instead",
            )
        hit = [ms for ms in self.models if self._applies(ms, name)]
        if not hit:
            raise ArchdslError(
                f"no model in this search has a hyper or choice named '{name}'",
                hint=did_you_mean(name, self._known(), "names"),
            )
        for ms in hit:
            if name in ms.options:
                bad = [v for v in (dim.values or ()) if v not in ms.options[name]]
                if dim.kind != "categorical" or bad:
                    raise ArchdslError(
                        f"choice '{name}' of {ms.model} takes values from "
                        f"{{{', '.join(ms.options[name])}}}, found '{dim.describe()}'"
                    )
            elif dim.kind == "categorical" and any(isinstance(v, str) for v in dim.values):
                raise ArchdslError(f"'{name}' is a number; found '{dim.describe()}'")
            ms.dims[name] = dim

    def _fix(self, name: str) -> None:
        hit = [ms for ms in self.models if self._applies(ms, name)]
        if not hit:
            raise ArchdslError(
                f"--set {name}: no model in this search has a hyper or choice named '{name}'",
                hint=did_you_mean(name, self._known(), "names"),
            )
        for ms in hit:
            ms.dims.pop(name, None)

    # ---- Optuna ---------------------------------------------------------------------------------
    def param_name(self, ms: ModelSpace, name: str) -> str:
        """``heads`` with one model (or a knob searched alike for all), else ``MODEL.heads``."""
        if len(self.models) == 1:
            return name
        if name in KNOBS and all(m.dims.get(name) == ms.dims[name] for m in self.models):
            return name
        return f"{ms.model}.{name}"

    def sample(self, trial) -> Candidate:
        """Draw a configuration with ``trial.suggest_*`` (Optuna's define-by-run space)."""
        names = [ms.model for ms in self.models]
        model = trial.suggest_categorical("model", names) if len(names) > 1 else names[0]
        ms = self.models[names.index(model)]
        values = {n: v for n, v in self.fixed.items() if self._applies(ms, n)}
        for name, dim in ms.dims.items():
            values[name] = suggest(trial, self.param_name(ms, name), dim)
        knobs = {k: values.pop(k) for k in KNOBS if k in values}
        return Candidate(
            model, values, depth=int(knobs.get("depth", DEFAULT_DEPTH)), lr=float(knobs.get("lr", DEFAULT_LR))
        )

    def describe(self) -> list[str]:
        """One line per model: its searched dimensions and fixed settings."""
        lines = []
        for ms in self.models:
            dims = "; ".join(f"{n} in {d.describe()}" for n, d in ms.dims.items()) or "nothing searched"
            fixed = {n: v for n, v in self.fixed.items() if self._applies(ms, n)}
            extra = ("; fixed " + ", ".join(f"{k}={v}" for k, v in fixed.items())) if fixed else ""
            lines.append(f"{ms.model}: {dims}{extra}")
        return lines


def suggest(trial, name: str, dim: SearchDim):
    if dim.kind == "categorical":
        return trial.suggest_categorical(name, list(dim.values))
    if dim.kind == "int":
        return trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
    return trial.suggest_float(name, float(dim.low), float(dim.high), log=dim.log)
