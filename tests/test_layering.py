"""Layering by folder: which folder may import which, where torch, triton and optuna may enter, and
that the import graph of archdsl's modules has no cycles; ``archdsl check`` stays instant and
torch-free.

The folders, bottom to top (``front`` is the part of archdsl/ the language needs)::

    front    archdsl/{errors,ir,args,autodiff}.py     stdlib and lark only
    lang     archdsl/lang/                            front, lark
    core     the rest of archdsl/*.py (layer, reference, inits, ...)
    codegen  codegen/*.py, codegen/emit/ (writes Triton source, no torch), codegen/run/
    lm       archdsl/lm/       train  archdsl/train/       search  search/
    entry    archdsl/__init__.py, api.py, cli.py: the user's entry points, above everything

Imports are read from the source (``ast``), including those inside functions; a module named by a
string (the CLI's dispatch table, the lazy API table) is not seen, which is why those modules are
entry points. Relative imports are resolved. Known exceptions are allow-lists below, each with its
reason; an entry that no longer matches anything fails ``test_allow_lists_have_no_stale_entries`` so
that the lists only shrink.
"""

from __future__ import annotations

import ast
import resource
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: source folder -> the package it is installed as (pyproject.toml's package-dir)
PACKAGES = {"archdsl": "archdsl", "codegen": "archdsl.codegen", "search": "archdsl.search"}
FRONT = {"archdsl.errors", "archdsl.ir", "archdsl.args", "archdsl.autodiff"}
ENTRY = {"archdsl", "archdsl.api", "archdsl.cli"}
#: folder -> the folders its modules may import (its own always allowed); entry may import anything
MAY_IMPORT = {
    "front": {"front"},
    "lang": {"front"},
    "core": {"front", "lang", "codegen"},  # layer.py compiles through codegen's build_cell
    "codegen": {"front", "lang", "core", "codegen/emit", "codegen/run"},
    "codegen/emit": {"front", "core", "codegen"},  # emit sits below run: it never imports run
    "codegen/run": {"front", "core", "codegen", "codegen/emit"},
    "lm": {"front", "lang", "core", "codegen"},
    "train": {"front", "lang", "core", "codegen", "lm"},
    "search": {"front", "lang", "core", "codegen", "lm", "train"},
}
#: third-party packages front and lang may import (the standard library is always allowed)
ALLOWED_IN_FRONT = {"lark"}
#: a package -> the only top-level folders whose modules may import it
ONLY_IN = {"triton": {"codegen"}, "optuna": {"search"}}
#: (importer, imported) edges through which codegen/emit reaches torch today
EMIT_TORCH_EDGES = {
    ("archdsl.codegen.emit.triton", "archdsl.reference"): "rename_permutation (plain Python) lives in the "
    "torch reference; moving it below emit is part of #14",
}
#: import cycles that exist today, as the set of modules of each strongly connected component
ALLOWED_CYCLES: dict[frozenset, str] = {}  # none: a cycle that must stay is listed here with why


def imports(path: Path, module: str = "") -> set[str]:
    """Absolute module names imported anywhere in a file (including inside functions). ``module``:
    the file's own dotted name, to resolve relative imports. ``from p import n`` gives ``p.n``: a
    submodule, or a name whose module is its longest prefix that is one."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


@cache
def modules() -> dict[str, Path]:
    """Every source module of archdsl (as installed: codegen/ is archdsl.codegen) -> its file."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


@cache
def graph() -> dict[str, frozenset[str]]:
    """module -> the archdsl modules it imports (a name resolves to its longest module prefix)."""

    def resolve(name: str) -> str | None:
        while name and name not in modules():
            name = name.rpartition(".")[0]
        return name or None

    found = {}
    for m, path in modules().items():
        found[m] = frozenset(t for t in map(resolve, imports(path, m)) if t and t != m)
    return found


def folder(module: str) -> str:
    if module in ENTRY:
        return "entry"
    if module in FRONT:
        return "front"
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "codegen" and parts[2] in ("emit", "run"):
        return f"codegen/{parts[2]}"
    if len(parts) > 1 and parts[1] in ("lang", "lm", "train", "codegen", "search"):
        return parts[1]
    return "core"


def third_party(module: str) -> set[str]:
    top = {name.split(".")[0] for name in imports(modules()[module], module)}
    return {t for t in top if t not in sys.stdlib_module_names and t != "archdsl"}


def test_folders_import_only_downwards():
    wrong = []
    for m, targets in graph().items():
        src = folder(m)
        if src == "entry":
            continue
        for t in sorted(targets):
            dst = folder(t)
            if dst != src and dst not in MAY_IMPORT[src]:
                wrong.append(f"{m} ({src}) imports {t} ({dst})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", sorted(m for m in modules() if folder(m) in ("front", "lang")))
def test_front_and_lang_import_only_lark_stdlib_and_front(module):
    bad = third_party(module) - ALLOWED_IN_FRONT
    assert not bad, f"{module} is in the front half but imports {sorted(bad)}"


def test_heavy_packages_stay_in_their_folders():
    wrong = []
    for m, path in modules().items():
        top = path.relative_to(ROOT).parts[0]
        for package in third_party(m) & set(ONLY_IN):
            if top not in ONLY_IN[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {package}")
    assert not wrong, "\n".join(wrong)


def emit_reaches_torch() -> dict[tuple[str, str], list[str]]:
    """Edges (importer, imported) on codegen/emit's import closure that lead into a module importing
    torch, each with the path from an emit module to the torch importer."""
    found = {}
    for start in sorted(m for m in modules() if folder(m) == "codegen/emit"):
        seen, todo = {start: [start]}, [start]
        while todo:
            m = todo.pop()
            if "torch" in third_party(m):
                path = seen[m]
                found.setdefault((path[-2], path[-1]) if len(path) > 1 else (m, "torch"), path)
                continue  # the edge into it is reported; its own imports add nothing new
            for t in sorted(graph()[m] - seen.keys()):
                seen[t] = [*seen[m], t]
                todo.append(t)
    return found


def test_emit_imports_no_torch():
    """codegen/emit writes Triton source as text: neither it nor anything it imports loads torch."""
    bad = {edge: path for edge, path in emit_reaches_torch().items() if edge not in EMIT_TORCH_EDGES}
    assert not bad, "\n".join(" -> ".join(path) + " (imports torch)" for path in bad.values())


def cycles(g: dict[str, frozenset[str]] | None = None) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    g = graph() if g is None else g
    index, low, stack, on, found = {}, {}, [], set(), []
    for root in g:
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    component.add(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_the_import_graph_has_no_cycles():
    """Between any two modules of archdsl (codegen and search included), lazy imports counted; a cycle
    that is part of one allowed today (a smaller one left after a partial fix) passes."""
    bad = [c for c in cycles() if not any(c <= allowed for allowed in ALLOWED_CYCLES)]
    assert not bad, "import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in bad)


def test_allow_lists_have_no_stale_entries():
    """When a cycle or a torch edge of emit is removed, its allow-list entry must go too."""
    stale = [" <-> ".join(sorted(a)) for a in ALLOWED_CYCLES if not any(c <= a for c in cycles())]
    stale += [f"{a} -> {b}" for a, b in EMIT_TORCH_EDGES if (a, b) not in emit_reaches_torch()]
    assert not stale, "remove from the allow-lists: " + "; ".join(stale)


def test_the_checker_catches_violations(tmp_path):
    """The scan itself works: a stray `import torch` inside a function is found, relative imports are
    resolved, folders are named, and a planted cycle is found."""
    f = tmp_path / "m.py"
    f.write_text("import lark\n\ndef g():\n    from torch import nn\n    import triton.language as tl\n")
    assert imports(f) == {"lark", "torch.nn", "triton.language"}
    f.write_text("from . import b\nfrom ..x import y\n")
    assert imports(f, "p.q.m") == {"p.q.b", "p.x.y"}
    assert folder("archdsl.codegen.emit.triton") == "codegen/emit" and folder("archdsl.layer") == "core"
    assert folder("archdsl.lang.checker") == "lang" and folder("archdsl.ir") == "front"
    planted = {"a": {"b"}, "b": {"c", "e"}, "c": {"a"}, "d": {"a"}, "e": {"d"}, "f": {"f"}}
    assert cycles({k: frozenset(v) for k, v in planted.items()}) == [frozenset("abcde")]
    assert cycles({"a": frozenset("b"), "b": frozenset()}) == []


def test_check_cli_is_fast_and_torch_free():
    """`archdsl check specs/*.rnn` as a user runs it: instant (CPU time bounded per spec), and no
    torch, triton or optuna loaded."""
    specs = sorted(str(p) for p in (ROOT / "specs").glob("*.rnn"))
    probe = (
        "import sys\n"
        "from archdsl.cli import main\n"
        "rc = main(['check', *sys.argv[1:]])\n"
        "heavy = sorted(m for m in ('torch', 'triton', 'optuna', 'numpy') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(rc)\n"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", probe, *specs], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": ok (") == len(specs)
    assert "HEAVY []" in proc.stdout, proc.stdout.splitlines()[-1]
    # CPU time, so that other jobs on a shared machine do not make the test flaky; wall for the record
    # instant: half a second to start, then 60 ms a spec (35 specs took 2.15 s on a 2-core CI machine)
    limit = 0.5 + 0.06 * len(specs)
    assert cpu < limit, (
        f"archdsl check of {len(specs)} specs took {cpu:.2f} s of CPU ({wall:.2f} s wall), over {limit:.2f} s"
    )
