"""Triton's CPU interpreter without its repeated language patching.

The interpreter maps ``triton.language`` onto its NumPy semantics when a kernel starts (``_patch_lang``,
undone when the kernel ends), and again at every call of a ``@triton.jit`` helper from inside the
kernel: ``inspect.getmembers`` over ``tl``, ``tl.tensor`` and ``tl.math`` each time, for members the
kernel's own mapping already covers. The chunked kernels call small helpers (``_dot``, ``_tile``,
``_decayed``, …) tens of thousands of times a layer: in a profile of a gdn layer at T 65
(tests/test_chunked.py) that re-patching was 20% of the interpreter's time; three of the suite's
slowest tests took 64 s with ``install``, 76 s without.

``install`` makes a helper's call skip it while a kernel's mapping is in force and covers the
language modules the helper sees (``triton.language`` or ``triton.language.core``: Triton's own
helpers in ``standard.py`` see the latter, whose members a kernel's mapping of ``tl`` does not
reach). A kernel's own call, a helper that sees another module (its mapping then undone with the
kernel's) and a helper called outside any kernel patch as before. Nothing is computed differently.
Where Triton's interpreter lacks these functions (another version), nothing is installed.
"""

from __future__ import annotations


def install() -> bool:
    """Installs the shortcut in ``triton.runtime.interpreter``; whether it could."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        return False
    patch_lang = getattr(interpreter, "_patch_lang", None)
    scope_type = getattr(interpreter, "_LangPatchScope", None)
    if patch_lang is None or getattr(patch_lang, "archdsl_once", False):
        return False
    if not hasattr(scope_type() if scope_type else None, "_changes"):
        return False
    import triton.language as tl

    active: list = []  # the running kernel's scope (kernels do not nest)
    mapped: set = set()  # the language modules mapped in it

    def seen(fn) -> set:
        return {id(v) for v in fn.__globals__.values() if v is tl or v is tl.core}

    def once(fn):
        if active and seen(fn) <= mapped:  # inside a kernel, with what the helper sees mapped
            return scope_type()
        scope = patch_lang(fn)
        if active:  # a helper that sees another module: its mapping is undone with the kernel's
            active[0]._changes.extend(scope._changes)
            scope._changes = []
            mapped.update(seen(fn))
            return scope
        restore = scope.restore

        def restore_and_leave():
            active.clear()
            mapped.clear()
            restore()

        scope.restore = restore_and_leave
        active.append(scope)
        mapped.update(seen(fn))
        return scope

    once.archdsl_once = True
    interpreter._patch_lang = once
    return True
