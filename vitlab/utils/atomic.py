"""Atomic file writes: a crash leaves either the old file or the new one, never a torn one.

The data goes to a temporary file in the destination folder (so the final rename stays on one
filesystem), is fsynced, renamed over the target, and the folder is fsynced so the rename itself
survives a power loss (DESIGN rule 6).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync, then rename onto ``path``.

    The parent folder is created when missing. On any error (KeyboardInterrupt included) the
    temp file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
