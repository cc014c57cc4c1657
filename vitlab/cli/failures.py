"""From a failure to what a person can act on: one line, its exit code, and whether the run survives.

``user_error`` maps what is not already a :class:`~vitlab.errors.VitlabError`: a full disk or an
unwritable place (12 / 13, by errno), out of memory (14), no network (11), any other OS error
that names a file (1). ``run_failures`` adds to a training command's error whether its run folder
can be continued, decided by the checkpoint the resume would load, not by file names.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vitlab.errors import (DiskFullError, DownloadError, NotWritableError, OutOfMemoryError, VitlabError,
                           write_error)

# What torch and the C allocators say when memory runs out without raising torch.OutOfMemoryError
# (the CPU allocator and MPS raise a plain RuntimeError).
_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory")
_OOM_ADVICE = ("a batch too large is the usual cause: lower --batch-size (or data.eval_batch_size, for validation "
               "during training), or choose a smaller model, a lower --precision or another --device")
_NETWORK = (urllib.error.URLError, ConnectionError, socket.timeout, socket.gaierror)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def is_out_of_memory(err: BaseException) -> bool:
    """True for ``MemoryError``, ``torch.OutOfMemoryError`` and the allocators' RuntimeErrors."""
    if isinstance(err, MemoryError):
        return True
    torch = sys.modules.get("torch")  # a torch error needs torch loaded; the CLI's start stays light
    if torch is not None and isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(t in str(err).lower() for t in _OOM_TEXT)


def user_error(err: BaseException) -> VitlabError | None:
    """The one-line error for ``err``, or None for a failure that is a bug (it keeps its traceback)."""
    if isinstance(err, VitlabError):
        return err
    if is_out_of_memory(err):
        return OutOfMemoryError(f"out of memory ({_first_line(err)}); {_OOM_ADVICE}")
    if isinstance(err, _NETWORK):
        reason = getattr(err, "reason", None) or _first_line(err)
        return DownloadError(f"download failed ({reason}); check the network or proxy, or fetch the file "
                             "elsewhere and pass it with --weights FILE")
    if isinstance(err, OSError):
        mapped = write_error(err)
        if mapped is not None:
            return mapped
        if err.filename:
            return VitlabError(f"{err.filename}: {err.strerror or _first_line(err)}")
    return None


def resume_hint(run: str | Path, command: str) -> str:
    """Whether the run folder ``run`` can be continued: only when it holds a checkpoint that loads."""
    from vitlab.engine.resume import find_resumable
    from vitlab.engine.rundir import RunDir

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the skipped files are named when the run resumes
            found = find_resumable(RunDir(run))
    except Exception:  # noqa: BLE001 - a hint must never hide the error it explains
        return f"check the run folder {run} with: vitlab {command} --resume auto --out {run}"
    if found is None:
        return (f"the run folder {run} has no valid checkpoint to continue from; fix the cause and start the run "
                "again (--overwrite replaces the folder)")
    return (f"the run folder {run} can be continued (from step {found.step}) with: "
            f"vitlab {command} --resume auto --out {run}")


@contextmanager
def run_failures(run: str | Path, command: str) -> Iterator[None]:
    """Inside a training command: a full disk, an unwritable folder or out of memory becomes its user
    error with :func:`resume_hint` appended (same class, same exit code)."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - re-raised unless it is one of the resource failures
        user = user_error(err)
        if not isinstance(user, (DiskFullError, NotWritableError, OutOfMemoryError)):
            raise
        raise type(user)(f"{user}; {resume_hint(run, command)}") from err
