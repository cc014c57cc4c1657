"""timm hybrid ViT state dicts (``vit_base_r50_s16_*``, ``vit_small_r26_s32_*``) <-> vitlab.

vitlab's hybrid (:class:`vitlab.layers.resnet_stem.ResNetV2Embed` in a ViT) keeps timm's names
(``patch_embed.backbone.stem.conv.weight``, ``patch_embed.backbone.stages.{i}.blocks.{j}.conv1.weight``,
``patch_embed.proj.weight`` ...), so the key map is the identity; this module reads the
architecture off the shapes and checks every key and shape against the model it implies, naming
whatever is missing, unexpected or mis-shaped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from vitlab.errors import CheckpointError
from vitlab.layers.resnet_stem import resnet_stride
from vitlab.models.vit import VisionTransformer, build_vit
from vitlab.models.vit_config import ViTConfig

_HEADS = {384: 6, 768: 12, 1024: 16}  # timm's hybrids: ViT-S / -B / -L


def infer_hybrid_config(state: Mapping[str, torch.Tensor], source: str = "timm", **known: Any) -> ViTConfig:
    """The :class:`ViTConfig` of a timm hybrid state dict; ``known`` fields win (e.g. ``num_heads``)."""
    stem_key = "patch_embed.backbone.stem.conv.weight"
    if stem_key not in state:
        raise CheckpointError(f"{source}: no {stem_key}; not a ResNetV2 hybrid ViT")
    width, in_chans = (int(s) for s in state[stem_key].shape[:2])
    blocks: dict[int, set[int]] = {}
    for key in state:
        m = re.match(r"patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.", key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    layers = tuple(len(blocks[i]) for i in sorted(blocks))
    if not layers or sorted(blocks) != list(range(len(layers))):
        raise CheckpointError(f"{source}: ResNet stages {sorted(blocks)} are not numbered 0..n-1")
    depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    embed_dim = int(state["patch_embed.proj.weight"].shape[0])
    stride = resnet_stride(layers)
    fields: dict[str, Any] = dict(
        stem="resnetv2", stem_layers=layers, stem_width=width, patch_size=stride, in_chans=in_chans,
        embed_dim=embed_dim, depth=depth, num_heads=_HEADS.get(embed_dim, max(1, embed_dim // 64)),
        mlp_dim=int(state["blocks.0.mlp.fc1.weight"].shape[0]) if depth else 4 * embed_dim,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        num_classes=int(state["head.weight"].shape[0]) if "head.weight" in state else 0,
        mean=(0.5,) * in_chans, std=(0.5,) * in_chans, crop_pct=0.9, interpolation="bicubic",
    )
    n_pos = int(state["pos_embed"].shape[1]) - 1
    side = math.isqrt(n_pos)
    if side * side == n_pos:
        fields["img_size"] = (side * stride, side * stride)
    fields.update({k: v for k, v in known.items() if v is not None})
    return ViTConfig().replace(**fields)


def import_state(theirs: Mapping[str, torch.Tensor], source: str = "timm", **known: Any) -> tuple[ViTConfig, dict]:
    """(config, vitlab state dict) from a timm hybrid ViT state dict, every key and shape checked."""
    cfg = infer_hybrid_config(theirs, source, **known)
    with torch.device("meta"):
        expected = build_vit(cfg).state_dict()
    check_keys(theirs, expected, source)
    return cfg, {k: theirs[k] for k in expected}


def export_state(model: VisionTransformer) -> dict[str, torch.Tensor]:
    """vitlab hybrid -> timm state dict (the same names); raises for models that are not hybrids."""
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, ViTConfig) or cfg.stem != "resnetv2" or cfg.attn_type != "mhsa":
        raise CheckpointError("export to a timm hybrid needs a vitlab ViT with stem 'resnetv2' and plain attention")
    return {k: v.detach() for k, v in model.state_dict().items()}


def check_keys(theirs: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError listing missing, unexpected and mis-shaped keys (with shapes)."""
    missing = sorted(set(expected) - set(theirs))
    unexpected = sorted(set(theirs) - set(expected))
    shapes = [k for k in expected if k in theirs and tuple(theirs[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(f"{k} {tuple(expected[k].shape)}" for k in missing[:8]))
        if unexpected:
            parts.append("unexpected " + ", ".join(f"{k} {tuple(theirs[k].shape)}" for k in unexpected[:8]))
        if shapes:
            parts.append("shape mismatch " + ", ".join(
                f"{k} {tuple(theirs[k].shape)} vs {tuple(expected[k].shape)}" for k in shapes[:8]))
        raise CheckpointError(f"{source}: state dict does not fit the hybrid ViT: " + "; ".join(parts))
