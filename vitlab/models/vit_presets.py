"""Registered ViT variants under timm's names.

Paper sizes (ViT paper, Table 1): Ti / S / B / L / H = width 192 / 384 / 768 / 1024 / 1280,
depth 12 / 12 / 12 / 24 / 32, heads 3 / 6 / 12 / 16 / 16, MLP 768 / 1536 / 3072 / 4096 / 5120.
The ``*_28`` and ``*_32`` variants are small models for 28x28 (MNIST) and 32x32 (CIFAR) inputs.
"""

from __future__ import annotations

from typing import Any

from vitlab.models.vit import VisionTransformer, build_vit
from vitlab.models.vit_config import ViTConfig
from vitlab.registry import register_model

_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3, mlp_dim=768),
    "small": dict(embed_dim=384, depth=12, num_heads=6, mlp_dim=1536),
    "base": dict(embed_dim=768, depth=12, num_heads=12, mlp_dim=3072),
    "large": dict(embed_dim=1024, depth=24, num_heads=16, mlp_dim=4096),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16, mlp_dim=5120),
}

_MNIST = dict(in_chans=1, num_classes=10, mean=(0.1307,), std=(0.3081,), crop_pct=1.0, interpolation="bilinear")
_CIFAR = dict(in_chans=3, num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
              crop_pct=1.0, interpolation="bilinear")


def _vit(size: str, patch: int, img: int, overrides: dict[str, Any], **defaults: Any) -> VisionTransformer:
    # crop_pct 0.9 at 224: what timm's pretrained_cfg says for every ImageNet ViT of these names
    # (the weights' own eval crop); the 384 presets pass 1.0, as timm does.
    cfg = ViTConfig(img_size=(img, img), patch_size=patch, crop_pct=0.9, **_SIZES[size]).replace(**defaults)
    return build_vit(cfg.replace(**overrides))


@register_model
def vit_tiny_patch16_224(**kw: Any) -> VisionTransformer:
    """ViT-Ti/16 at 224."""
    return _vit("tiny", 16, 224, kw)


@register_model
def vit_tiny_patch16_384(**kw: Any) -> VisionTransformer:
    """ViT-Ti/16 at 384."""
    return _vit("tiny", 16, 384, kw, crop_pct=1.0)


@register_model
def vit_small_patch8_224(**kw: Any) -> VisionTransformer:
    """ViT-S/8 at 224."""
    return _vit("small", 8, 224, kw)


@register_model
def vit_small_patch16_224(**kw: Any) -> VisionTransformer:
    """ViT-S/16 at 224."""
    return _vit("small", 16, 224, kw)


@register_model
def vit_small_patch16_384(**kw: Any) -> VisionTransformer:
    """ViT-S/16 at 384."""
    return _vit("small", 16, 384, kw, crop_pct=1.0)


@register_model
def vit_small_patch32_224(**kw: Any) -> VisionTransformer:
    """ViT-S/32 at 224."""
    return _vit("small", 32, 224, kw)


@register_model
def vit_base_patch8_224(**kw: Any) -> VisionTransformer:
    """ViT-B/8 at 224."""
    return _vit("base", 8, 224, kw)


@register_model
def vit_base_patch16_224(**kw: Any) -> VisionTransformer:
    """ViT-B/16 at 224 (the paper's ViT-B/16)."""
    return _vit("base", 16, 224, kw)


@register_model
def vit_base_patch16_384(**kw: Any) -> VisionTransformer:
    """ViT-B/16 fine-tuned at 384."""
    return _vit("base", 16, 384, kw, crop_pct=1.0)


@register_model
def vit_base_patch32_224(**kw: Any) -> VisionTransformer:
    """ViT-B/32 at 224."""
    return _vit("base", 32, 224, kw)


@register_model
def vit_base_patch32_384(**kw: Any) -> VisionTransformer:
    """ViT-B/32 at 384."""
    return _vit("base", 32, 384, kw, crop_pct=1.0)


@register_model
def vit_large_patch14_224(**kw: Any) -> VisionTransformer:
    """ViT-L/14 at 224."""
    return _vit("large", 14, 224, kw)


@register_model
def vit_large_patch16_224(**kw: Any) -> VisionTransformer:
    """ViT-L/16 at 224."""
    return _vit("large", 16, 224, kw)


@register_model
def vit_large_patch16_384(**kw: Any) -> VisionTransformer:
    """ViT-L/16 at 384."""
    return _vit("large", 16, 384, kw, crop_pct=1.0)


@register_model
def vit_large_patch32_224(**kw: Any) -> VisionTransformer:
    """ViT-L/32 at 224."""
    return _vit("large", 32, 224, kw)


@register_model
def vit_large_patch32_384(**kw: Any) -> VisionTransformer:
    """ViT-L/32 at 384."""
    return _vit("large", 32, 384, kw, crop_pct=1.0)


@register_model
def vit_huge_patch14_224(**kw: Any) -> VisionTransformer:
    """ViT-H/14 at 224."""
    return _vit("huge", 14, 224, kw)


# ---------------------------------------------------------------------------- small inputs
_PICO = dict(embed_dim=128, depth=6, num_heads=4, mlp_dim=256)


@register_model
def vit_pico_patch4_28(**kw: Any) -> VisionTransformer:
    """Width 128, 6 blocks, patch 4 on 28x28 grey digits (7x7 tokens)."""
    return build_vit(ViTConfig(img_size=(28, 28), patch_size=4, **_PICO).replace(**_MNIST).replace(**kw))


@register_model
def vit_pico_patch7_28(**kw: Any) -> VisionTransformer:
    """Width 128, 6 blocks, patch 7 on 28x28 grey digits (4x4 tokens)."""
    return build_vit(ViTConfig(img_size=(28, 28), patch_size=7, **_PICO).replace(**_MNIST).replace(**kw))


@register_model
def vit_pico_convstem_patch4_28(**kw: Any) -> VisionTransformer:
    """As vit_pico_patch4_28 with a two-conv stem (32, 64 channels) in place of the patchify layer."""
    cfg = ViTConfig(img_size=(28, 28), patch_size=4, stem="conv", stem_args=dict(channels=(32, 64)), **_PICO)
    return build_vit(cfg.replace(**_MNIST).replace(**kw))


@register_model
def vit_tiny_patch4_32(**kw: Any) -> VisionTransformer:
    """Width 192, 9 blocks, 3 heads, MLP 384, patch 4 on 32x32 colour images (8x8 tokens)."""
    cfg = ViTConfig(img_size=(32, 32), patch_size=4, embed_dim=192, depth=9, num_heads=3, mlp_dim=384)
    return build_vit(cfg.replace(**_CIFAR).replace(**kw))


@register_model
def vit_pico_patch4_32(**kw: Any) -> VisionTransformer:
    """Width 128, 6 blocks, patch 4 on 32x32 colour images (8x8 tokens)."""
    return build_vit(ViTConfig(img_size=(32, 32), patch_size=4, **_PICO).replace(**_CIFAR).replace(**kw))


_NANO = dict(embed_dim=96, depth=4, num_heads=3, mlp_dim=192)


@register_model
def vit_nano_convstem_patch4_28(**kw: Any) -> VisionTransformer:
    """Width 96, 4 blocks, 3 heads, MLP 192 on a two-conv stem (32, 64 channels): 7x7 tokens from 28x28.

    The default of the MNIST main job: the convolutional stem (the ViT paper's hybrid idea at a small
    scale) makes a ViT data-efficient enough for 5,000 training digits on a CPU budget.
    """
    cfg = ViTConfig(img_size=(28, 28), patch_size=4, stem="conv", stem_args=dict(channels=(32, 64)), **_NANO)
    return build_vit(cfg.replace(**_MNIST).replace(**kw))


@register_model
def vit_nano_patch4_28(**kw: Any) -> VisionTransformer:
    """Width 96, 4 blocks, 3 heads, MLP 192, plain patch-4 embedding on 28x28 grey digits."""
    return build_vit(ViTConfig(img_size=(28, 28), patch_size=4, **_NANO).replace(**_MNIST).replace(**kw))


# ---------------------------------------------------------------------------- the ViTs people use now
# timm's names, architectures and the preprocessing of each default pretrained tag (timm 1.0's
# pretrained_cfg: mean / std / crop_pct / interpolation). Every registered vitlab model has a head
# (1000 classes here), also where timm's default tag is headless (DINOv2, SigLIP: num_classes 0 in
# its pretrained_cfg): pass num_classes=0 for the features; importing a headless file does that itself.
_IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
_CLIP = dict(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))
_DINOV2 = dict(init_values=1e-5, crop_pct=1.0, **_IMAGENET)  # LayerScale
_REG4 = dict(reg_tokens=4, no_embed_class=True)


@register_model
def deit3_small_patch16_224(**kw: Any) -> VisionTransformer:
    """DeiT-III S/16 (Touvron et al. 2022): LayerScale 1e-6, position table over the patches only."""
    return _vit("small", 16, 224, kw, no_embed_class=True, init_values=1e-6, crop_pct=0.9, **_IMAGENET)


@register_model
def deit3_base_patch16_224(**kw: Any) -> VisionTransformer:
    """DeiT-III B/16 (Touvron et al. 2022): LayerScale 1e-6, position table over the patches only."""
    return _vit("base", 16, 224, kw, no_embed_class=True, init_values=1e-6, crop_pct=0.9, **_IMAGENET)


@register_model
def vit_small_patch14_dinov2(**kw: Any) -> VisionTransformer:
    """DINOv2 ViT-S/14 (Oquab et al. 2024): LayerScale 1e-5, 518 px (37 x 37 grid)."""
    return _vit("small", 14, 518, kw, **_DINOV2)


@register_model
def vit_base_patch14_dinov2(**kw: Any) -> VisionTransformer:
    """DINOv2 ViT-B/14: LayerScale 1e-5, 518 px (37 x 37 grid)."""
    return _vit("base", 14, 518, kw, **_DINOV2)


@register_model
def vit_small_patch14_reg4_dinov2(**kw: Any) -> VisionTransformer:
    """DINOv2 ViT-S/14 with 4 registers (Darcet et al. 2024); the position table covers the patches only."""
    return _vit("small", 14, 518, kw, **_DINOV2, **_REG4)


@register_model
def vit_base_patch14_reg4_dinov2(**kw: Any) -> VisionTransformer:
    """DINOv2 ViT-B/14 with 4 registers; the position table covers the patches only."""
    return _vit("base", 14, 518, kw, **_DINOV2, **_REG4)


@register_model
def vit_base_patch16_reg4_gap_256(**kw: Any) -> VisionTransformer:
    """ViT-B/16 at 256 with 4 registers, no class token, average pooling with fc_norm (timm)."""
    return _vit("base", 16, 256, kw, class_token=False, global_pool="avg", fc_norm=True, crop_pct=0.9, **_REG4)


@register_model
def vit_base_patch16_clip_224(**kw: Any) -> VisionTransformer:
    """CLIP ViT-B/16 image tower (Radford et al. 2021): norm_pre, no patch bias, LayerNorm eps 1e-5;
    preprocessing of timm's default tag (laion2b_ft_in12k_in1k, a 1000-class fine-tune)."""
    return _vit("base", 16, 224, kw, pre_norm=True, norm_eps=1e-5, crop_pct=0.95, **_CLIP)


@register_model
def vit_base_patch16_siglip_224(**kw: Any) -> VisionTransformer:
    """SigLIP ViT-B/16 image tower (Zhai et al. 2023): no class token, attention-pooling (MAP) head."""
    return _vit("base", 16, 224, kw, class_token=False, global_pool="map", crop_pct=0.9)
