"""Model families. Importing this package registers the built-in models."""

from vitlab.models import vit_presets  # noqa: F401  (registers the ViT family)
from vitlab.models import deepvit, hybrid  # noqa: F401  (DeepViT and hybrid presets)
from vitlab.models.vit import Block, VisionTransformer, build_vit
from vitlab.models.vit_config import ViTConfig
from vitlab.registry import register_arch

# Checkpoints store every ViT (DeepViT and the hybrid are ViTs with other layers) as arch "vit";
# models/factory.py rebuilds it.
register_arch("vit", VisionTransformer)

__all__ = ["Block", "ViTConfig", "VisionTransformer", "build_vit"]
