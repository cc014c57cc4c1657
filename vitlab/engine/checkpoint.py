"""Checkpoints that describe themselves, written atomically.

A checkpoint is two files:

* ``NAME.safetensors``: the model weights, plus metadata (string -> string): ``format``
  (``"vitlab"``), ``format_version``, ``model`` (JSON: arch, model_name, config with the
  preprocessing), ``class_names`` (JSON list) and ``info`` (JSON: epoch, step, metrics).
  ``vitlab eval`` and ``vitlab predict`` rebuild the model from this file alone.
* ``NAME.state.pt``: training state (optimizer, scheduler, scaler, RNG states, counters) as plain
  tensors and containers, readable with ``torch.load(weights_only=True)``.

Every write goes to a temporary file in the same folder, is fsynced, then renamed over the
target, so a crash leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import nn

from vitlab.errors import CheckpointError
from vitlab.models.factory import build_from_description, describe

FORMAT = "vitlab"
FORMAT_VERSION = "1"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model and what was stored with it."""

    model: nn.Module
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync, then rename onto ``path``."""
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


def save_weights(
    path: str | Path,
    model: nn.Module,
    class_names: list[str],
    info: Mapping[str, Any] | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Write the model's weights and self-description to ``path`` (safetensors), atomically.

    ``state`` replaces ``model.state_dict()`` when the weights live elsewhere (e.g. gathered from
    FSDP shards); the description still comes from ``model``.
    """
    weights = state if state is not None else model.state_dict()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": json.dumps(describe(model)),
        "class_names": json.dumps(list(class_names)),
        "info": json.dumps(dict(info or {})),
    }
    blob = st_save(tensors, metadata=metadata)
    atomic_write(path, lambda f: f.write(blob))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a vitlab safetensors checkpoint (no tensors are read)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a valid safetensors file ({err})") from None
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vitlab checkpoint (no 'format: vitlab' metadata); "
                              "use `vitlab convert` for weights from other libraries")
    try:
        return {
            "model": json.loads(raw["model"]),
            "class_names": json.loads(raw.get("class_names", "[]")),
            "info": json.loads(raw.get("info", "{}")),
        }
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt vitlab metadata ({err})") from None


def read_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a torn or corrupt file raises CheckpointError."""
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: cannot read tensors ({err})") from None


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


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model stored in a vitlab checkpoint and load its weights."""
    path = Path(path)
    meta = read_metadata(path)
    model = build_from_description(meta["model"], source=str(path))
    load_state_checked(model, read_tensors(path), str(path))
    return Checkpoint(model=model.to(device), class_names=meta["class_names"], info=meta["info"], path=path)


def save_state(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write training state (plain tensors / containers) atomically with torch.save."""
    atomic_write(path, lambda f: torch.save(dict(state), f))


def load_state(path: str | Path) -> dict[str, Any]:
    """Read training state with ``weights_only=True`` (never unpickles arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: training state not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for torn / foreign files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: cannot load training state ({first})") from None
