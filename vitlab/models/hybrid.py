"""Hybrid ViTs (ViT paper, Sec. 3.1): ResNetV2 feature-map cells as tokens, under timm's names.

The ViT with :class:`vitlab.layers.resnet_stem.ResNetV2Embed` injected as its embed layer
(``stem="resnetv2"``, an entry of :data:`vitlab.layers.tables.STEMS`); ``patch_size`` is the ResNet's output stride, so the token grid is
(H / P) x (W / P). Parameter counts and state-dict keys equal timm's
``timm.models.vision_transformer_hybrid`` models, so their weights load as they are:

=======================  ===============================  ========  ===========
preset                   ResNet stem                      ViT       parameters
=======================  ===============================  ========  ===========
vit_base_r50_s16_224     R50, stages (3, 4, 9), stride 16  ViT-B     98,659,112
vit_base_r50_s16_384     same, at 384                      ViT-B     (grid 24x24)
vit_small_r26_s32_224    R26, stages (2, 2, 2, 2), s. 32   ViT-S     36,431,912
vit_small_r26_s32_384    same, at 384                      ViT-S     (grid 12x12)
=======================  ===============================  ========  ===========
"""

from __future__ import annotations

from typing import Any

from vitlab.models.vit import VisionTransformer, build_vit
from vitlab.models.vit_config import ViTConfig
from vitlab.registry import register_model

_R50 = dict(stem="resnetv2", stem_args=dict(layers=(3, 4, 9), width=64), patch_size=16)
_R26 = dict(stem="resnetv2", stem_args=dict(layers=(2, 2, 2, 2), width=64), patch_size=32)
_BASE = dict(embed_dim=768, depth=12, num_heads=12, mlp_dim=3072)
_SMALL = dict(embed_dim=384, depth=12, num_heads=6, mlp_dim=1536)


def _hybrid(img: int, stem: dict[str, Any], size: dict[str, int], overrides: dict[str, Any]) -> VisionTransformer:
    crop = 0.9 if img == 224 else 1.0  # timm's hybrid configs
    cfg = ViTConfig(img_size=(img, img), crop_pct=crop, interpolation="bicubic", **stem, **size)
    return build_vit(cfg.replace(**overrides))


@register_model
def vit_base_r50_s16_224(**kw: Any) -> VisionTransformer:
    """R50+ViT-B/16: the ViT paper's hybrid, ResNet-50's first three stages (stride 16) as stem."""
    return _hybrid(224, _R50, _BASE, kw)


@register_model
def vit_base_r50_s16_384(**kw: Any) -> VisionTransformer:
    """R50+ViT-B/16 at 384 (the paper's fine-tuning resolution)."""
    return _hybrid(384, _R50, _BASE, kw)


@register_model
def vit_small_r26_s32_224(**kw: Any) -> VisionTransformer:
    """R26+ViT-S/32: a four-stage ResNet-26 (stride 32) under ViT-S (AugReg's hybrid)."""
    return _hybrid(224, _R26, _SMALL, kw)


@register_model
def vit_small_r26_s32_384(**kw: Any) -> VisionTransformer:
    """R26+ViT-S/32 at 384."""
    return _hybrid(384, _R26, _SMALL, kw)
