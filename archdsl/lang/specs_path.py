"""Find a spec: a path, or the name of a bundled spec (``e88`` -> ``specs/e88.rnn``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from archdsl.errors import ArchdslError, did_you_mean


def bundled() -> dict[str, Path]:
    root = resources.files("archdsl.specs")
    return {Path(str(f)).stem: Path(str(f)) for f in root.iterdir() if str(f).endswith(".rnn")}


def resolve_spec(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".rnn" or p.exists():
        if not p.exists():
            raise ArchdslError(f"no such spec file: {name_or_path}")
        return p
    specs = bundled()
    if name_or_path in specs:
        return specs[name_or_path]
    raise ArchdslError(
        f"no spec file or bundled spec named '{name_or_path}'",
        hint=did_you_mean(name_or_path, specs, "bundled specs"),
    )


def is_spec(name_or_path: str) -> bool:
    try:
        resolve_spec(name_or_path)
        return True
    except ArchdslError:
        return False
