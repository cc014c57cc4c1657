"""DeepViT (Zhou et al. 2021): the ViT with re-attention injected as its attention layer.

No model class of its own: every preset is a :class:`ViTConfig` with ``attn="reattention"`` (an entry
of :data:`vitlab.layers.tables.ATTENTIONS`)
built by :func:`vitlab.models.vit.build_vit`. Sizes follow the authors' code (zhoudaquan/dvit_repo):

=========================  =====  ======  =====  ====  ===================  ============  ===========
preset                     width  blocks  heads  MLP   re-attention         stem          parameters
=========================  =====  ======  =====  ====  ===================  ============  ===========
deepvit_16b_patch16_224    384    16      12     3x    all 16               patch 16      24,426,664
deepvit_24b_patch16_224    384    24      12     3x    all 24               patch 16      36,261,448
deepvit_32b_patch16_224    384    32      12     3x    all 32               patch 16      48,096,232
deepvit_s_patch16_224      396    16      12     3x    last 5, scaled       conv (cnn)    27,312,632
deepvit_l_patch16_224      420    32      12     3x    last 12              conv (cnn)    58,883,708
=========================  =====  ======  =====  ====  ===================  ============  ===========

(1000-class head, qkv bias, official re-attention: 1x1 conv with bias + BatchNorm over heads.)
DeepViT-S / -L also use the authors' block scale adjustment 0.5 and their convolutional patch
embedding (:class:`vitlab.layers.cnn_embed.CnnPatchEmbed`); only -S scales the mixed maps by
``head_dim ** -0.5`` (``transform_scale``), as in the authors' definitions.

``deepvit_baseline_{16,24,32}b_patch16_224`` are the same networks with plain self-attention (the
"ViT-16/24/32" rows of the authors' comparison). Every 16/24/32-block preset takes ``wide=True``:
embedding width 768 instead of 384 (12 heads of 64, MLP 3x), the "wider hidden layers" remedy the
paper's Table 1 weighs against re-attention (more parameters instead of more diverse maps).
"""

from __future__ import annotations

from typing import Any

from vitlab.models.vit import VisionTransformer, build_vit
from vitlab.models.vit_config import ViTConfig
from vitlab.registry import register_model

# The authors' configs use mean = std = 0.5 and their timm-style crop of 0.9.
_IMAGENET = dict(img_size=(224, 224), patch_size=16, num_classes=1000, crop_pct=0.9, interpolation="bicubic")
_OFFICIAL = dict(mode="official", init="random")  # re-attention arguments as in the authors' code


def _width(wide: bool) -> dict[str, int]:
    dim = 768 if wide else 384
    return dict(embed_dim=dim, num_heads=12, mlp_dim=3 * dim)


def _deep(depth: int, wide: bool, reattention: bool, overrides: dict[str, Any]) -> VisionTransformer:
    cfg = ViTConfig(depth=depth, **_IMAGENET, **_width(wide))
    if reattention:
        cfg = cfg.replace(attn="reattention", attn_args=_OFFICIAL)
    return build_vit(cfg.replace(**overrides))


@register_model
def deepvit_16b_patch16_224(wide: bool = False, **kw: Any) -> VisionTransformer:
    """DeepViT-16B: 16 blocks of width 384, re-attention in every block (``wide``: width 768)."""
    return _deep(16, wide, True, kw)


@register_model
def deepvit_24b_patch16_224(wide: bool = False, **kw: Any) -> VisionTransformer:
    """DeepViT-24B: 24 blocks of width 384, re-attention in every block (``wide``: width 768)."""
    return _deep(24, wide, True, kw)


@register_model
def deepvit_32b_patch16_224(wide: bool = False, **kw: Any) -> VisionTransformer:
    """DeepViT-32B: 32 blocks of width 384, re-attention in every block (``wide``: width 768)."""
    return _deep(32, wide, True, kw)


@register_model
def deepvit_baseline_16b_patch16_224(wide: bool = False, **kw: Any) -> VisionTransformer:
    """ViT-16B, DeepViT-16B's self-attention baseline (``wide``: width 768)."""
    return _deep(16, wide, False, kw)


@register_model
def deepvit_baseline_24b_patch16_224(wide: bool = False, **kw: Any) -> VisionTransformer:
    """ViT-24B, DeepViT-24B's self-attention baseline (``wide``: width 768)."""
    return _deep(24, wide, False, kw)


@register_model
def deepvit_baseline_32b_patch16_224(wide: bool = False, **kw: Any) -> VisionTransformer:
    """ViT-32B, DeepViT-32B's self-attention baseline (``wide``: width 768)."""
    return _deep(32, wide, False, kw)


@register_model
def deepvit_s_patch16_224(**kw: Any) -> VisionTransformer:
    """DeepViT-S: width 396, 16 blocks, re-attention (scaled) in the last 5, convolutional stem."""
    cfg = ViTConfig(**_IMAGENET, embed_dim=396, depth=16, num_heads=12, mlp_dim=3 * 396, stem="cnn",
                    stem_args=dict(width=64), attn="reattention", attn_args=dict(_OFFICIAL, blocks=5, scale=True),
                    scale_adjustment=0.5)
    return build_vit(cfg.replace(**kw))


@register_model
def deepvit_l_patch16_224(**kw: Any) -> VisionTransformer:
    """DeepViT-L: width 420, 32 blocks, re-attention in the last 12, convolutional stem."""
    cfg = ViTConfig(**_IMAGENET, embed_dim=420, depth=32, num_heads=12, mlp_dim=3 * 420, stem="cnn",
                    stem_args=dict(width=64), attn="reattention", attn_args=dict(_OFFICIAL, blocks=12),
                    scale_adjustment=0.5)
    return build_vit(cfg.replace(**kw))
