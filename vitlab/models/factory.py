"""Rebuild a model from the description stored in a checkpoint (arch + config dict)."""

from __future__ import annotations

from typing import Any

from torch import nn

from vitlab.errors import CheckpointError, ConfigError
from vitlab.models.detr.detr import DETR, DetrConfig, build_detr
from vitlab.models.vit import VisionTransformer, build_vit
from vitlab.models.vit_config import ViTConfig

# arch name -> (config class, builder). New families (deepvit, hybrid, detr) add a row here.
ARCHS: dict[str, tuple[type, Any]] = {"vit": (ViTConfig, build_vit), "detr": (DetrConfig, build_detr)}


def arch_of(model: nn.Module) -> str:
    """The arch name under which ``model`` is stored in checkpoints."""
    if isinstance(model, VisionTransformer):
        return "vit"
    if isinstance(model, DETR):
        return "detr"
    raise ConfigError(f"no checkpoint arch known for {type(model).__name__}")


def describe(model: nn.Module) -> dict[str, Any]:
    """{"arch", "model_name", "config"}: enough to rebuild ``model`` without its weights."""
    config = getattr(model, "config", None)
    if config is None:
        raise ConfigError(f"{type(model).__name__} has no config; build it with create_model()")
    return {"arch": arch_of(model), "model_name": getattr(model, "model_name", None), "config": config.to_dict()}


def build_from_description(desc: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """Inverse of :func:`describe`. ``source`` names the file in error messages."""
    arch = desc.get("arch")
    if arch not in ARCHS:
        raise CheckpointError(f"{source}: unknown model arch {arch!r} (known: {', '.join(ARCHS)})")
    config_cls, builder = ARCHS[arch]
    try:
        config = config_cls.from_dict(desc.get("config", {}))
    except ConfigError as err:
        raise CheckpointError(f"{source}: invalid model config: {err}") from None
    model = builder(config)
    model.model_name = desc.get("model_name")
    return model
