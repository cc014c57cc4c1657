"""Read a :class:`ViTConfig` off a vitlab-named state dict (shapes), plus what the source knows.

Shapes give width, depth, patch size, channels, MLP width, tokens, heads of the classifier and
the pre-logits layer. They do not give the number of attention heads (a numeric choice), the
grid's aspect ratio, nor numerics such as LayerNorm eps; those come from the source's own
metadata or conventions, or from the caller (``num_heads=``, ``img_size=``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from vitlab.layers import to_2tuple
from vitlab.models.vit_config import ViTConfig
from vitlab.weights.errors import MappingError
from vitlab.weights.keymap import block_depth

# The published ViT / DeiT widths and their head counts (ViT-H uses 16 heads of 80).
KNOWN_HEADS = {192: 3, 384: 6, 512: 8, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16, 1536: 16}


def default_heads(embed_dim: int) -> int:
    """Heads for a width: the published choice, else 64-wide heads."""
    return KNOWN_HEADS.get(embed_dim, max(1, embed_dim // 64))


def infer_vit_config(state: Mapping[str, torch.Tensor], source: str, **known: Any) -> ViTConfig:
    """A config that fits ``state``; ``known`` fields (heads, eps, img_size, mean...) win over guesses.

    ``img_size`` may be the size the weights were trained at (its grid must hold the position
    table's entries) or any size when the table is resampled later by the caller.
    """
    if "patch_embed.proj.weight" not in state:
        raise MappingError(f"{source}: no patch embedding (patch_embed.proj.weight); not a ViT this converter knows")
    w = state["patch_embed.proj.weight"]
    embed_dim, in_chans, p_h, p_w = w.shape
    if p_h != p_w:
        raise MappingError(f"{source}: non-square patches {p_h}x{p_w} are not supported")
    depth = block_depth(state, r"blocks\.(\d+)\.")
    if depth == 0:
        raise MappingError(f"{source}: no transformer blocks found")
    class_token = "cls_token" in state
    dist_token = "dist_token" in state
    fc_norm = "fc_norm.weight" in state
    reg_tokens = int(state["reg_token"].shape[1]) if "reg_token" in state else 0
    pool = "map" if "attn_pool.latent" in state else "avg" if (fc_norm or not class_token) else "token"
    fields: dict[str, Any] = dict(
        patch_size=int(p_h), in_chans=int(in_chans), embed_dim=int(embed_dim), depth=depth,
        num_heads=default_heads(int(embed_dim)), mlp_dim=int(state["blocks.0.mlp.fc1.weight"].shape[0]),
        qkv_bias="blocks.0.attn.qkv.bias" in state, class_token=class_token, dist_token=dist_token,
        fc_norm=fc_norm, global_pool=pool, reg_tokens=reg_tokens, pre_norm="norm_pre.weight" in state,
        # LayerScale: the gammas are in the file; the initial value only matters for new blocks (1e-5: DINOv2)
        init_values=1e-5 if "blocks.0.ls1.gamma" in state else None,
        num_classes=int(state["head.weight"].shape[0]) if "head.weight" in state else 0,
        representation_size=int(state["pre_logits.0.weight"].shape[0]) if "pre_logits.0.weight" in state else None,
        pos_embed="learn" if "pos_embed" in state else "none",
    )
    n_prefix = int(class_token) + int(dist_token) + reg_tokens
    native = grid_of(state, n_prefix, known.get("img_size"), int(p_h), source)
    fields["img_size"] = (native[0] * int(p_h), native[1] * int(p_w))
    known = {k: v for k, v in known.items() if v is not None and k != "img_size"}
    if known.get("mean") is not None and len(known["mean"]) != in_chans:
        known.pop("mean"), known.pop("std", None)
    cfg = ViTConfig().replace(**fields)
    if "mean" not in known and in_chans != 3:
        known["mean"], known["std"] = (0.5,) * int(in_chans), (0.5,) * int(in_chans)
    return cfg.replace(**known)


def grid_of(state: Mapping[str, torch.Tensor], n_prefix: int, img_size: Any, patch: int, source: str) -> tuple[int, int]:
    """The patch grid the position table was trained on: a given size whose grid holds the table, else square."""
    if "pos_embed" not in state:
        if img_size is None:
            raise MappingError(f"{source}: no position table; give the image size")
        h, w = to_2tuple(img_size)
        return (h // patch, w // patch)
    n = int(state["pos_embed"].shape[1]) - n_prefix
    if img_size is not None:
        h, w = to_2tuple(img_size)
        if (h // patch) * (w // patch) == n and h % patch == 0 and w % patch == 0:
            return (h // patch, w // patch)
    side = math.isqrt(n)
    if side * side != n:
        raise MappingError(f"{source}: {n} position entries are not a square grid; give img_size=(H, W)")
    return (side, side)
