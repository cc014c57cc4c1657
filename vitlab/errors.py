"""Errors that reach the user as one line and a distinct exit code.

The CLI catches :class:`VitlabError` and prints ``error: <message>``; library users catch the
specific subclasses. Exit codes are stable so scripts can branch on them (the table is in
docs/reliability.md): 1 base, 2 config / flags, 3 data, 4 checkpoint, 5 run folder, 6 non-finite,
8 / 9 / 10 weights files (vitlab/weights/errors.py), 11 download, 12 disk full or file-size
limit, 13 not writable, 14 out of memory; 130 / 143 after SIGINT / SIGTERM.
"""

from __future__ import annotations

import errno
from pathlib import Path


class VitlabError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""

    exit_code: int = 1


class ConfigError(VitlabError, ValueError):
    """A bad flag, config field or model option (exit code 2)."""

    exit_code = 2


class UnknownModelError(ConfigError, KeyError):
    """A model name that is not registered (exit code 2)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(VitlabError):
    """A missing, empty or unreadable dataset or image (exit code 3)."""

    exit_code = 3


class CheckpointError(VitlabError):
    """A missing, corrupt or incompatible checkpoint (exit code 4)."""

    exit_code = 4


class RunDirError(VitlabError):
    """An output folder that would be overwritten or cannot be used (exit code 5)."""

    exit_code = 5


class NonFiniteError(VitlabError):
    """A non-finite loss or gradient stopped training (exit code 6)."""

    exit_code = 6


class DownloadError(VitlabError):
    """A download that failed: no network, an unreachable host, a refused request (exit code 11)."""

    exit_code = 11


class DiskFullError(VitlabError):
    """A write stopped by a full disk, a quota or a file-size limit (exit code 12)."""

    exit_code = 12


class NotWritableError(VitlabError):
    """A file or folder that cannot be written: permissions, a read-only file system (exit code 13)."""

    exit_code = 13


class OutOfMemoryError(VitlabError):
    """The device or the host ran out of memory, usually a batch too large (exit code 14)."""

    exit_code = 14


# errno values of a write that failed for want of room, and of a place that refuses writes
_FULL = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "the file-size limit was reached",
         errno.EDQUOT: "the disk quota is exceeded"}
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_error(err: OSError, path: str | Path | None = None, flag: str | None = None) -> VitlabError | None:
    """The user error for a write that failed with ``err``, or None when it is neither a full disk
    (12) nor an unwritable place (13). ``path`` defaults to the error's own file name (the
    destination of a copy or rename, ``filename2``, when there is one); ``flag`` (e.g. ``--out``)
    is what the user can change."""
    where = path if path is not None else (err.filename2 or err.filename or "a file")
    instead = f"choose another {flag}" if flag else "write somewhere else"
    if err.errno in _FULL:
        return DiskFullError(f"{where}: {_FULL[err.errno]} while writing; free space (or raise the limit) "
                             f"and retry, or {instead}")
    if err.errno in _DENIED:
        return NotWritableError(f"{where}: cannot be written ({err.strerror or 'permission denied'}); {instead} "
                                "or make it writable")
    return None
