"""A kernel's parameters, written once: the ``def`` line of the kernel and the launch in its launcher
come from the same ``Signature``, so they cannot drift apart. ``PyNames`` hands out the names of the
module's Python level (launchers, the autograd function, the public function): the spec's names
(``kh``, ``h0``), the axis sizes (``H``), each distinct from the module's own words.
"""

from __future__ import annotations

import re

from archdsl.codegen.emit.names import RESERVED, Namespace

WIDTH = 110  # the longest line a generated module has (as the project's own code)

# what the Python level of a module says itself; a spec name meeting one of these gets a suffix
PY_WORDS = frozenset(
    ("torch", "triton", "tl", "B", "T", "NC", "L", "CHUNK", "chunk", "num_warps", "ctx", "grid", "apply")
)


def wrap(head: str, items: list[str], tail: str, indent: int) -> list[str]:
    """``head(item, item, …)tail`` on one line if it fits, else the items packed onto lines of their own."""
    pad = "    " * indent
    one = f"{pad}{head}({', '.join(items)}){tail}"
    if len(one) <= WIDTH or not items:
        return [one]
    lines, cur = [f"{pad}{head}("], ""
    for it in items:
        piece = f"{it},"
        if cur and len(pad) + 4 + len(cur) + 1 + len(piece) > WIDTH:
            lines.append(f"{pad}    {cur}")
            cur = ""
        cur = f"{cur} {piece}" if cur else piece
    if cur:
        lines.append(f"{pad}    {cur}")
    return [*lines, f"{pad}){tail}"]


_ASSIGN = re.compile(r"^(\s*)([\w.\[\], ]+ = |return |)([\w.]+)\((.*?)\)(\.to\([\w.]+\))?$")


def fit(line: str) -> list[str]:
    """A statement longer than ``WIDTH`` (``x = f(a, b, …)`` or ``f(…)``) with its call's arguments
    on lines of their own; other lines as they are."""
    m = _ASSIGN.match(line)
    if len(line) <= WIDTH or not m:
        return [line]
    pad, lhs, fn, inner, tail = m.groups()
    items = _split_args(inner)
    if items is None:
        return [line]
    return wrap(lhs + fn, items, tail or "", len(pad) // 4)


def _split_args(inner: str) -> list[str] | None:
    """The top-level comma-separated pieces of a call's argument text (None if unbalanced)."""
    out, depth, cur = [], 0, ""
    for ch in inner:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return None
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return None if depth else [*out, cur.strip()]


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
        return ["@triton.jit", *wrap(f"def {name}", items, ":", 0)]

    def launch(self, kernel: str, grid: str, indent: int = 1) -> list[str]:
        """The launch of ``kernel`` over ``grid`` with every parameter's launcher value."""
        items = [v for _, v, c in self.params if not c]
        items += [f"{k}={v}" for k, v, c in self.params if c] + ["num_warps=num_warps"]
        return wrap(f"{kernel}[{grid}]", items, "", indent)
