"""The user-facing API, above the registry and the weights layer: build, load, save, convert.

>>> from vitlab.api import create_model, load_checkpoint
>>> model = create_model("vit_tiny_patch16_224", num_classes=10)

``save_weights`` writes a vitlab checkpoint; ``import_weights`` / ``export_weights`` convert
through the format table (:mod:`vitlab.weights.formats`).

Importing this module imports :mod:`vitlab.models`, whose families register themselves in the
leaf :mod:`vitlab.registry`; so :func:`list_models` here always sees the built-in models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import vitlab.models  # noqa: F401  (runs the @register_model decorators of the built-in families)
from vitlab.registry import build_model, get_builder, is_model, list_models, register_model
from vitlab.weights.api import Imported, export_weights, import_weights
from vitlab.weights.vitlab_format import Checkpoint, save_weights

__all__ = ["Checkpoint", "Imported", "create_model", "export_weights", "import_weights", "is_model", "list_models",
           "load_checkpoint", "register_model", "save_weights"]


def create_model(name: str, pretrained: str | None = None, weights: str | Path | None = None,
                 **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` replace fields of its config.

    ``pretrained=TAG`` loads the checkpoint ``name.TAG`` of :mod:`vitlab.weights.specs`
    (downloaded into the cache with a hash check); ``weights=FILE`` loads a local file of any
    format :mod:`vitlab.weights` reads. Both convert to this model's size and classes.

    Raises:
        UnknownModelError: the name is not registered (the message suggests close names).
        ConfigError: an override is unknown or invalid.
    """
    if pretrained is None and weights is None:
        return build_model(name, **overrides)
    from vitlab.weights import hub  # only when weights are asked for: keeps `import vitlab` light

    if pretrained is not None:
        get_builder(name)  # an unknown name fails here, with suggestions, before the spec lookup
        overrides = {**hub.pretrained_overrides(name, pretrained), **overrides}
    model = build_model(name, **overrides)
    hub.load_weights_into(model, name, pretrained=pretrained, weights=weights)
    return model


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model stored in a vitlab checkpoint (in eval mode) with its class names and info."""
    from vitlab.weights.rebuild import load_checkpoint as rebuild  # imports every family (DETR: torchvision)

    return rebuild(path, device)
