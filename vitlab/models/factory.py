"""Rebuild a model from the description stored in a checkpoint (arch + config dict).

Each family records its own arch name in the leaf registry where it is defined
(``vitlab/models/__init__.py``, ``vitlab/models/detr/__init__.py``), so the vitlab file format
can describe a model without importing the families; this table is the way back.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vitlab.errors import CheckpointError, ConfigError
from vitlab.models.detr.detr import DETR, DetrConfig, build_detr
from vitlab.models.vit import VisionTransformer, build_vit
from vitlab.models.vit_config import ViTConfig

# arch name -> (model class, config class, builder). DeepViT and the hybrid are ViTs with other
# layers, so they are stored as "vit"; a new family adds a row here and a register_arch call.
ARCHS: dict[str, tuple[type, type, Any]] = {
    "vit": (VisionTransformer, ViTConfig, build_vit),
    "detr": (DETR, DetrConfig, build_detr),
}


def build_from_description(desc: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """Inverse of :func:`vitlab.weights.vitlab_format.describe`. ``source`` names the file in errors."""
    arch = desc.get("arch")
    if arch not in ARCHS:
        raise CheckpointError(f"{source}: unknown model arch {arch!r} (known: {', '.join(ARCHS)})")
    _, config_cls, builder = ARCHS[arch]
    try:
        config = config_cls.from_dict(desc.get("config", {}))
    except ConfigError as err:
        raise CheckpointError(f"{source}: invalid model config: {err}") from None
    model = builder(config)
    model.model_name = desc.get("model_name")
    return model
