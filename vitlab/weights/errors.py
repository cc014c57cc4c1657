"""Errors of weight conversion; each reaches the CLI as one line with a distinct exit code.

Codes (see docs/weights.md): 4 a checkpoint that does not fit (missing / unexpected keys, wrong
shapes, unknown layout), 8 a truncated or malformed file (safetensors, .npz, .ckpt, .pth),
9 a pickle that needs more than plain tensors (never unpickled), 10 a failed hash check.
"""

from __future__ import annotations

from vitlab.errors import CheckpointError


class MappingError(CheckpointError):
    """Weights that do not map onto the model: keys or shapes disagree (exit code 4)."""

    exit_code = 4


class MalformedFileError(CheckpointError):
    """A truncated or malformed weights file (exit code 8)."""

    exit_code = 8


class UnsafePickleError(CheckpointError):
    """A torch pickle that needs globals beyond plain tensors; refused, not retried (exit code 9)."""

    exit_code = 9


class HashMismatchError(CheckpointError):
    """A downloaded file whose sha256 differs from the spec table (exit code 10)."""

    exit_code = 10
