"""Checkpoints as the engine sees them: a compatibility module over their new homes.

The vitlab file format (self-describing safetensors + plain training state) lives in
:mod:`vitlab.weights.vitlab_format`, atomic writes in :mod:`vitlab.utils.atomic`, and rebuilding a
model from a checkpoint in :mod:`vitlab.weights.rebuild` (public face:
:func:`vitlab.api.load_checkpoint`). The engine sits above the weights layer, so re-exporting
them here keeps ``from vitlab.engine.checkpoint import ...`` working without an upward import.
"""

from __future__ import annotations

from vitlab.utils.atomic import atomic_write
from vitlab.weights.rebuild import load_checkpoint
from vitlab.weights.vitlab_format import (
    FORMAT,
    FORMAT_VERSION,
    Checkpoint,
    load_state,
    load_state_checked,
    read_metadata,
    read_tensors,
    save_state,
    save_weights,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "Checkpoint", "atomic_write", "load_checkpoint", "load_state",
           "load_state_checked", "read_metadata", "read_tensors", "save_state", "save_weights"]
