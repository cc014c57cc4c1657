"""Atomic file writes: a crash leaves either the old file or the new one, never a torn one.

The data goes to a temporary file in the destination folder (so the final rename stays on one
filesystem), is fsynced, renamed over the target, and the folder is fsynced so the rename itself
survives a power loss (DESIGN rule 6).

Every write here reports a full disk, a quota or a file-size limit as
:class:`~vitlab.errors.DiskFullError` (exit 12) and a folder that refuses writes as
:class:`~vitlab.errors.NotWritableError` (exit 13), naming the path: an ``ENOSPC`` from
``write()`` carries no file name of its own.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vitlab.errors import NotWritableError, write_error


@contextmanager
def writing(path: str | Path, flag: str | None = None) -> Iterator[None]:
    """Turn a full-disk or unwritable-place ``OSError`` raised inside into the user error for ``path``."""
    try:
        yield
    except OSError as err:
        mapped = write_error(err, path, flag)
        if mapped is None:
            raise
        raise mapped from err


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync, then rename onto ``path``.

    The parent folder is created when missing. On any error (KeyboardInterrupt included) the
    temp file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    with writing(path):
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


def probe_writable(folder: str | Path, flag: str) -> None:
    """Raise before any work when ``folder`` (or, if missing, its nearest existing ancestor, where it
    would be created) cannot take a file: a probe file is created there, written and removed.

    Only asking (``os.access``) is not enough: root passes every permission check, and a read-only
    mount or a full disk answers only to a real write. Nothing is created when ``folder`` is missing.
    """
    folder = Path(folder)
    base = folder
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise NotWritableError(f"{flag} {folder}: {base} is not a folder; choose another {flag}")
    with writing(f"{flag} {folder}", flag):
        fd, probe = tempfile.mkstemp(prefix=".vitlab-probe.", suffix=".tmp", dir=base)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            Path(probe).unlink(missing_ok=True)
