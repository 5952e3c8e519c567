"""Layering: the front half imports only lark and the standard library; torch, triton and optuna
enter only where they belong; ``archdsl check`` stays instant and torch-free."""

from __future__ import annotations

import ast
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: parser -> checker -> IR (and autodiff): what `archdsl check` and the compiler's planning need
FRONT = [
    "lang/parser",
    "lang/syntax_errors",
    "lang/spec",
    "lang/checker",
    "lang/declarations",
    "lang/config",
    "lang/scope",
    "lang/elaborate",
    "lang/verify",
    "lang/space",
    "lang/sizes",
    "lang/check_cmd",
    "lang/specs_path",
    "lang/__init__",
    "ir",
    "errors",
    "args",
    "autodiff",
]
#: third-party packages each part may import (the standard library is always allowed)
ALLOWED_IN_FRONT = {"lark"}
#: a package -> the only top-level folders whose modules may import it
ONLY_IN = {"triton": {"codegen"}, "optuna": {"search"}}


def imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in a file (including inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if node.module == "archdsl":  # from archdsl import spec -> archdsl.lang.spec
                found.update(f"archdsl.{alias.name}" for alias in node.names)
    return found


def front_files() -> list[Path]:
    return [ROOT / "archdsl" / f"{m}.py" for m in FRONT if (ROOT / "archdsl" / f"{m}.py").exists()]


def all_files() -> list[Path]:
    return sorted(p for d in ("archdsl", "codegen", "search") for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", front_files(), ids=lambda p: p.name)
def test_front_half_imports_only_lark_stdlib_and_itself(path: Path):
    front = {"archdsl." + m.removesuffix("/__init__").replace("/", ".") for m in FRONT} | {"archdsl"}
    bad = sorted(
        name
        for name in imports(path)
        if name.split(".")[0] not in sys.stdlib_module_names
        and name.split(".")[0] not in ALLOWED_IN_FRONT
        and name not in front
    )
    assert not bad, f"{path.name} is in the front half but imports {bad}"


def test_heavy_packages_stay_in_their_folders():
    wrong = []
    for path in all_files():
        folder = path.relative_to(ROOT).parts[0]
        for name in imports(path):
            package = name.split(".")[0]
            if package in ONLY_IN and folder not in ONLY_IN[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {package}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_catches_a_violation(tmp_path):
    """The scan itself works: a stray `import torch` inside a function is found."""
    f = tmp_path / "m.py"
    f.write_text("import lark\n\ndef g():\n    from torch import nn\n    import triton.language as tl\n")
    assert imports(f) == {"lark", "torch", "triton.language"}


def test_check_cli_is_fast_and_torch_free():
    """`archdsl check specs/*.rnn` as a user runs it: under 2 s of CPU, no torch/triton/optuna loaded."""
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
    assert cpu < 2.0, f"archdsl check of {len(specs)} specs took {cpu:.2f} s of CPU ({wall:.2f} s wall)"
