"""Errors that reach the user as one line and a distinct exit code.

The CLI catches :class:`VitlabError` and prints ``error: <message>``; library users catch the
specific subclasses. Exit codes are stable so scripts can branch on them.
"""

from __future__ import annotations


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
