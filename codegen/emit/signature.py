"""A kernel's parameters, written once: the ``def`` line of the kernel and the launch in its launcher
come from the same ``Signature``, so they cannot drift apart. ``PyNames`` hands out the names of the
module's Python level (launchers, the autograd function, the public function): the spec's names
(``kh``, ``h0``), the axis sizes (``H``), each distinct from the module's own words.
"""

from __future__ import annotations

from archdsl.codegen.emit.names import RESERVED, Namespace

# what the Python level of a module says itself (the launchers' own keyword parameters among it); a
# spec name meeting one of these gets a suffix
LAUNCHER_WORDS = ("chunk", "num_warps", "dtypes")
PY_WORDS = frozenset(
    ("torch", "triton", "tl", "B", "T", "NC", "L", "CHUNK", "ctx", "grid", "apply", *LAUNCHER_WORDS)
)


def call(head: str, items: list[str], tail: str, indent: int) -> str:
    """``head(item, item, …)tail`` on one line: the formatter (``format.py``) wraps it where it is long."""
    return f"{'    ' * indent}{head}({', '.join(items)}){tail}"


class PyNames:
    """The module's Python-level names: one per key across all its launchers and functions, so the
    tensor ``kh`` that the per-token launcher returns is ``kh`` where the loop's launcher takes it."""

    def __init__(self, axes, module_words=()):
        self.ns = Namespace(RESERVED | PY_WORDS | frozenset(module_words), prefixed=False)
        self.size = {a: self.ns(("size", a), a.upper()) for a in axes}

    def __call__(self, key, preferred: str) -> str:
        return self.ns(key, preferred)

    def shape(self, axes) -> str:
        return ", ".join(self.size[a] for a in axes)

    def dims(self, *parts) -> str:
        """A shape's text: strings and numbers as they are, a tuple of axes as their sizes' names."""
        out = [self.shape(p) if isinstance(p, tuple) else str(p) for p in parts]
        return ", ".join(o for o in out if o)


class Signature:
    """A kernel's parameters in order: (name in the kernel, value in the launcher, constexpr?)."""

    def __init__(self):
        self.params: list[tuple[str, str, bool]] = []

    def arg(self, kernel_name: str, value: str) -> str:
        self.params.append((kernel_name, value, False))
        return kernel_name

    def constexpr(self, name: str, value: str) -> None:
        self.params.append((name, value, True))

    def define(self, name: str) -> list[str]:
        """``@triton.jit`` and the kernel's ``def`` line(s)."""
        items = [k + (": tl.constexpr" if c else "") for k, _, c in self.params]
        return ["@triton.jit", call(f"def {name}", items, ":", 0)]

    def launch(self, kernel: str, grid: str, indent: int = 1) -> list[str]:
        """The launch of ``kernel`` over ``grid`` with every parameter's launcher value."""
        items = [v for _, v, c in self.params if not c]
        items += [f"{k}={v}" for k, v, c in self.params if c] + ["num_warps=num_warps"]
        return [call(f"{kernel}[{grid}]", items, "", indent)]
