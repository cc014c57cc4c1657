"""``save_pretrained`` / ``from_pretrained``: a model as a folder, as Hugging Face and timm users expect.

The folder holds ``model.safetensors`` (a vitlab checkpoint: self-describing and SHA-256 sealed,
so the weights are verified on load) and ``config.json``::

    {"vitlab": {"format_version": 1, "model_name": ..., "arch": ..., "config": {ViTConfig fields}},
     "pretrained_cfg": {...}, "num_classes": N, "label_names": [...]}

``config.json`` has no ``architecture`` key on purpose: that key marks a timm hub folder, and a
``model_type`` one marks a transformers folder; :func:`from_pretrained` reads both of those too
(through :func:`vitlab.weights.api.import_weights`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from vitlab.utils.atomic import atomic_write
import vitlab.weights.pretrained_cfg as pcfg  # not `from vitlab.weights import`: the package imports api
from vitlab.weights.errors import MalformedFileError
from vitlab.weights.io import read_json
from vitlab.weights.vitlab_format import describe, save_weights

FOLDER_VERSION = 1
WEIGHTS = "model.safetensors"


def save_pretrained(model: nn.Module, folder: str | Path, class_names: list[str] | None = None) -> Path:
    """Write ``model`` to ``folder`` (model.safetensors + config.json); returns the folder."""
    folder = Path(folder)
    names = list(class_names if class_names is not None else getattr(model, "class_names", None) or [])
    cfg = getattr(model, "pretrained_cfg", None) or pcfg.from_config(model.config, getattr(model, "model_name", None))
    cfg = pcfg.jsonable({**cfg, **({"label_names": names} if names else {})})
    save_weights(folder / WEIGHTS, model, names, info={"pretrained_cfg": cfg})
    desc = describe(model)
    config = {"vitlab": {"format_version": FOLDER_VERSION, **desc}, "pretrained_cfg": cfg,
              "num_classes": int(getattr(model, "num_classes", 0)), "label_names": names}
    text = json.dumps(config, indent=2, default=list).encode()
    atomic_write(folder / "config.json", lambda f: f.write(text))
    return folder


def is_vitlab_folder(folder: Path) -> bool:
    """A folder written by :func:`save_pretrained` (config.json with a ``vitlab`` entry)."""
    return folder.is_dir() and "vitlab" in _config(folder)


def _config(folder: Path) -> dict[str, Any]:
    return read_json(folder / "config.json")


def load_folder(folder: Path, device: str = "cpu") -> nn.Module:
    """The model of a :func:`save_pretrained` folder, in eval mode, with class_names and pretrained_cfg."""
    from vitlab.weights.rebuild import load_checkpoint

    config = _config(folder)
    version = config["vitlab"].get("format_version")
    if version != FOLDER_VERSION:
        raise MalformedFileError(f"{folder}/config.json: vitlab folder version {version!r}; this vitlab reads "
                                 f"{FOLDER_VERSION}")
    ckpt = load_checkpoint(folder / WEIGHTS, device)  # checksum-verified
    model = ckpt.model
    model.class_names = ckpt.class_names
    model.pretrained_cfg = pcfg.from_json(config.get("pretrained_cfg") or ckpt.info.get("pretrained_cfg") or {})
    return model
