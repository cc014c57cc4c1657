"""The vitlab file format: checkpoints that describe themselves, written atomically.

A checkpoint is two files:

* ``NAME.safetensors``: the model weights, plus metadata (string -> string): ``format``
  (``"vitlab"``), ``format_version``, ``model`` (JSON: arch, model_name, config with the
  preprocessing), ``class_names`` (JSON list) and ``info`` (JSON: epoch, step, metrics).
  ``vitlab eval`` and ``vitlab predict`` rebuild the model from this file alone
  (:func:`vitlab.api.load_checkpoint`).
* ``NAME.state.pt``: training state (optimizer, scheduler, scaler, RNG states, counters) as plain
  tensors and containers, readable with ``torch.load(weights_only=True)``.

Integrity (:mod:`vitlab.weights.checksums`): the weights file's metadata holds ``checksum``, a
SHA-256 over its header and every tensor byte, verified by :func:`read_tensors`; a resumable
step's weights also hold ``state_checksum`` of its state file, verified by :func:`load_state`.

This module sits below everything that reads or writes these files (engine, weights, api): it
imports no model family. A model is described by ``model.config.to_dict()`` plus its arch name,
which the leaf registry knows (:func:`vitlab.registry.arch_of`) or the caller passes.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import nn

from vitlab.errors import CheckpointError, ConfigError
from vitlab.registry import arch_of
from vitlab.utils.atomic import atomic_write
from vitlab.weights.checksums import CHECKSUM_KEY, STATE_KEY, seal, verify_bytes, verify_safetensors
from vitlab.weights.errors import MalformedFileError

FORMAT = "vitlab"
FORMAT_VERSION = "2"  # 2: carries checksums. "1" files (none) still load, unverified
_UNCHECKED_VERSION = "1"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model and what was stored with it."""

    model: nn.Module
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def describe(model: nn.Module, arch: str | None = None) -> dict[str, Any]:
    """{"arch", "model_name", "config"}: enough to rebuild ``model`` without its weights."""
    config = getattr(model, "config", None)
    if config is None:
        raise ConfigError(f"{type(model).__name__} has no config; build it with create_model()")
    return {"arch": arch or arch_of(model), "model_name": getattr(model, "model_name", None), "config": config.to_dict()}


def save_weights(
    path: str | Path,
    model: nn.Module,
    class_names: list[str],
    info: Mapping[str, Any] | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
    arch: str | None = None,
    state_checksum: str | None = None,
) -> None:
    """Write the model's weights and self-description to ``path`` (safetensors), atomically.

    ``state`` replaces ``model.state_dict()`` when the weights live elsewhere (e.g. gathered from
    FSDP shards); the description still comes from ``model``. ``arch`` overrides the registry's
    arch name for ``model``'s class. The file carries a checksum of itself, and ``state_checksum``
    (the tag of the training state saved with these weights) when given.
    """
    weights = state if state is not None else model.state_dict()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": json.dumps(describe(model, arch)),
        "class_names": json.dumps(list(class_names)),
        "info": json.dumps(dict(info or {})),
    }
    if state_checksum is not None:
        metadata[STATE_KEY] = state_checksum
    pieces = seal(st_save(tensors, metadata=metadata))
    atomic_write(path, lambda f: [f.write(p) for p in pieces])


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a vitlab safetensors checkpoint (no tensors are read)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None
    except (SafetensorError, ValueError) as err:
        # MalformedFileError (8): the code every command gives a malformed weights file
        raise MalformedFileError(f"{path}: not a valid safetensors file ({err})") from None
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vitlab checkpoint (no 'format: vitlab' metadata); "
                              "use `vitlab convert` for weights from other libraries")
    try:
        return {
            "model": json.loads(raw["model"]),
            "class_names": json.loads(raw.get("class_names", "[]")),
            "info": json.loads(raw.get("info", "{}")),
            "checksum": raw.get(CHECKSUM_KEY),
            "state_checksum": raw.get(STATE_KEY),
        }
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt vitlab metadata ({err})") from None


def read_tensors(path: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a malformed or torn file raises MalformedFileError (8), a changed one
    CheckpointError (4).

    With ``verify`` (the default) a file that carries a checksum is checked first, every byte; a
    vitlab checkpoint without one (written before checksums) is read with one warning.
    """
    if verify and verify_safetensors(path) is None:
        _without_checksum(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read tensors ({err.strerror or err})") from None
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise MalformedFileError(f"{path}: not a valid safetensors file ({err})") from None


def _without_checksum(path: str | Path) -> None:
    """A file with no checksum: fine for foreign files, a warning for a version-1 vitlab file (from
    before checksums), an error for any other vitlab file (its checksum entry itself was damaged)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return  # read_tensors reports the malformed file itself
    if meta.get("format") != FORMAT:
        return
    if meta.get("format_version") != _UNCHECKED_VERSION:
        raise CheckpointError(f"{path}: checksum missing from a vitlab file of format version "
                              f"{meta.get('format_version')!r}: the file changed after it was written; it is not used")
    warnings.warn(f"{path}: no checksum (written by an older vitlab): its bytes are not verified", stacklevel=3)


def load_state_checked(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` only if every key and shape matches; else raise, model untouched."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s) e.g. {', '.join(unexpected[:3])}")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es) e.g. {'; '.join(wrong[:2])}")
        raise CheckpointError(f"{source}: weights do not fit this model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def state_bytes(state: Mapping[str, Any]) -> bytes:
    """Training state serialised as :func:`save_state` writes it (to checksum before writing)."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    return buf.getvalue()


def save_state(path: str | Path, state: Mapping[str, Any] | bytes) -> None:
    """Write training state (plain tensors / containers, or its :func:`state_bytes`) atomically."""
    data = state if isinstance(state, bytes) else state_bytes(state)
    atomic_write(path, lambda f: f.write(data))


def load_state(path: str | Path, checksum: str | None = None) -> dict[str, Any]:
    """Read training state with ``weights_only=True`` (never unpickles arbitrary objects).

    ``checksum`` (the ``state_checksum`` of the weights saved with it) is verified first, so a
    changed byte is reported as such instead of being unpickled into wrong optimizer state.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: training state not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read training state ({err.strerror or err})") from None
    if checksum is not None:
        verify_bytes(data, checksum, path)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for torn / foreign files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: cannot load training state ({first})") from None
