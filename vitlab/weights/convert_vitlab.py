"""vitlab's own format as a row of the format table: detect, read, write, and its own peer.

The file describes itself (:mod:`vitlab.weights.vitlab_format`), so reading applies none of the
caller's ``known`` fields: the stored config is the truth, and size or head changes are surgery
done afterwards by :func:`vitlab.weights.api.import_weights`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vitlab.models.vit import VisionTransformer
from vitlab.models.vit_config import ViTConfig
from vitlab.weights.io import validate_safetensors_header
from vitlab.weights.source import Forward, Source
from vitlab.weights.vitlab_format import FORMAT, read_metadata, read_tensors, save_weights


def is_vitlab_file(path: Path) -> bool:
    """A .safetensors file whose metadata says ``format: vitlab`` (a malformed header raises)."""
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return False
    return validate_safetensors_header(path)[1].get("format") == FORMAT


def read_file(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(decoded metadata, tensors) of a vitlab checkpoint."""
    return read_metadata(path), read_tensors(path)  # read_tensors verifies the checksum


def source_from(raw: tuple[dict[str, Any], dict[str, torch.Tensor]], source: str, known: Mapping[str, Any]) -> Source:
    """The stored config and tensors as they are (``known`` is not applied: the file describes itself)."""
    meta, state = raw
    return Source(ViTConfig.from_dict(meta["model"]["config"]), state, meta["class_names"],
                  {"source_info": meta["info"]})


def write_file(model: VisionTransformer, path: Path, class_names: list[str], info: Mapping[str, Any]) -> None:
    """A vitlab checkpoint; ``info`` is made JSON-safe (paths and the like become strings)."""
    save_weights(path, model, class_names, info=json.loads(json.dumps(dict(info), default=str)))


def peer(path: Path, cfg: ViTConfig) -> Forward:
    """vitlab runs its own files: the model rebuilt from the file's description (eval mode)."""
    from vitlab.weights.rebuild import load_checkpoint  # every family (DETR needs torchvision): only when run

    return load_checkpoint(path).model
