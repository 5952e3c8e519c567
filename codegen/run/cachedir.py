"""Where archdsl keeps what it compiles: the generated modules (``kernels/``), the autotuner's choices
and Triton's remembered compiler hash, all under ``$ARCHDSL_CACHE`` (default ``~/.cache/archdsl``).
Imports nothing of archdsl, so every module that reads or writes the cache may import it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$ARCHDSL_CACHE/kernels`` (default ``~/.cache/archdsl/kernels``), private to its owner (0o700):
    the modules in it are imported, so no other user may write there."""
    root = os.environ.get("ARCHDSL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "archdsl")
    path = Path(root) / "kernels"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_mode & 0o077 and st.st_uid == os.getuid():  # made by an older archdsl, or by hand
        path.chmod(0o700)
    return path
