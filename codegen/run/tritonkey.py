"""Triton's compiler fingerprint, remembered between processes.

Every Triton kernel's cache key starts with ``triton.runtime.cache.triton_key()``: a SHA-256 over
Triton's own sources and its 500 MB ``libtriton.so``, computed once per process (0.3–0.9 s, most of
a cached first call). ``install`` replaces it with the same value read from
``$ARCHDSL_CACHE/triton_key.json``, under a fingerprint of every file that the hash reads (each
file's path, size and modification time, ~150 ``stat`` calls): a Triton installed or edited anywhere
gives another fingerprint, so its key is computed afresh (by Triton's own function) and stored.
Triton's own compile workers are primed the same way (``triton.runtime.cache.triton_key = ...``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from archdsl.codegen.run.cachedir import cache_dir


def fingerprint(root: str) -> str:
    """A hash of (path, size, mtime) of every Python file and shared library under ``root``."""
    h = hashlib.sha256()
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            if f.endswith((".py", ".so")):
                st = os.stat(os.path.join(d, f))
                h.update(
                    f"{os.path.relpath(os.path.join(d, f), root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
                )
    return h.hexdigest()


def _store_file() -> Path:
    return cache_dir().parent / "triton_key.json"


def remembered(compute, root: str):
    """``compute()``'s value, read from the store under ``root``'s fingerprint, else computed and
    stored (an atomic rename: concurrent processes each write a whole file)."""
    path, fp = _store_file(), fingerprint(root)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(fp), str):
        return known[fp]
    value = compute()
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({fp: value}, f)
    os.replace(tmp, path)
    return value


def install() -> bool:
    """Route ``triton.runtime.cache.triton_key`` through ``remembered`` (once; False where this
    Triton has no such function, which then keeps its own)."""
    try:
        import triton
        import triton.runtime.cache as cache
    except ImportError:
        return False
    original = getattr(cache, "triton_key", None)
    if original is None or getattr(original, "archdsl", False):
        return original is not None
    root = os.path.dirname(os.path.abspath(triton.__file__))

    @functools.cache
    def triton_key() -> str:
        return remembered(original, root)

    triton_key.archdsl = True
    # every module that bound the name (``from .cache import triton_key``) gets the replacement
    for name, module in list(sys.modules.items()):
        if name.startswith("triton") and getattr(module, "triton_key", None) is original:
            module.triton_key = triton_key
    return True
