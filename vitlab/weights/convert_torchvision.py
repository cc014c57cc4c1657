"""torchvision ``vit_b_16`` / ``vit_b_32`` / ``vit_l_16`` / ``vit_l_32`` / ``vit_h_14`` <-> vitlab.

torchvision's encoder layer uses ``nn.MultiheadAttention``, whose ``in_proj_weight`` is the same
fused (q | k | v) matrix as vitlab's ``qkv``; its MLP is an ``nn.Sequential`` (Linear at index 0
and 3). LayerNorm eps 1e-6, exact GELU, ImageNet mean / std. torchvision models are square.
Files are plain state dicts read with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitlab.models.vit import VisionTransformer
from vitlab.models.vit_config import ViTConfig
from vitlab.weights.errors import MappingError
from vitlab.weights.infer import infer_vit_config
from vitlab.weights.io import read_torch, write_torch
from vitlab.weights.keymap import Rule, block_depth, from_vitlab, require_plain_vit, to_vitlab
from vitlab.weights.source import Forward, Source

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# torchvision's builders: name -> (patch, layers, heads, width, mlp)
ARCHS = {
    "vit_b_16": (16, 12, 12, 768, 3072), "vit_b_32": (32, 12, 12, 768, 3072),
    "vit_l_16": (16, 24, 16, 1024, 4096), "vit_l_32": (32, 24, 16, 1024, 4096),
    "vit_h_14": (14, 32, 16, 1280, 5120),
}

_L = "encoder.layers.encoder_layer_{i}."
RULES: tuple[Rule, ...] = (
    Rule("cls_token", "class_token"),
    Rule("pos_embed", "encoder.pos_embedding"),
    Rule("patch_embed.proj.weight", "conv_proj.weight"),
    Rule("patch_embed.proj.bias", "conv_proj.bias"),
    Rule("blocks.{i}.norm1.weight", _L + "ln_1.weight"),
    Rule("blocks.{i}.norm1.bias", _L + "ln_1.bias"),
    Rule("blocks.{i}.attn.qkv.weight", _L + "self_attention.in_proj_weight"),
    Rule("blocks.{i}.attn.qkv.bias", _L + "self_attention.in_proj_bias"),
    Rule("blocks.{i}.attn.proj.weight", _L + "self_attention.out_proj.weight"),
    Rule("blocks.{i}.attn.proj.bias", _L + "self_attention.out_proj.bias"),
    Rule("blocks.{i}.norm2.weight", _L + "ln_2.weight"),
    Rule("blocks.{i}.norm2.bias", _L + "ln_2.bias"),
    Rule("blocks.{i}.mlp.fc1.weight", _L + "mlp.0.weight"),
    Rule("blocks.{i}.mlp.fc1.bias", _L + "mlp.0.bias"),
    Rule("blocks.{i}.mlp.fc2.weight", _L + "mlp.3.weight"),
    Rule("blocks.{i}.mlp.fc2.bias", _L + "mlp.3.bias"),
    Rule("norm.weight", "encoder.ln.weight"),
    Rule("norm.bias", "encoder.ln.bias"),
    Rule("pre_logits.0.weight", "heads.pre_logits.weight", optional=True),
    Rule("pre_logits.0.bias", "heads.pre_logits.bias", optional=True),
    Rule("head.weight", "heads.head.weight", optional=True),
    Rule("head.bias", "heads.head.bias", optional=True),
)


def _upgrade(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # torchvision < 0.13 named the MLP's Linear layers linear_1 / linear_2 (its own loader renames them too).
    return {k.replace("mlp.linear_1.", "mlp.0.").replace("mlp.linear_2.", "mlp.3."): v for k, v in state.items()}


def import_state(theirs: Mapping[str, torch.Tensor], source: str = "torchvision", arch: str | None = None,
                 **known: Any) -> tuple[ViTConfig, dict]:
    """(config, vitlab state) from a torchvision ViT state dict; ``arch`` (e.g. "vit_h_14") fixes the heads."""
    theirs = _upgrade(theirs)
    depth = block_depth(theirs, r"encoder\.layers\.encoder_layer_(\d+)\.")
    state = to_vitlab(theirs, RULES, depth, source)
    defaults: dict[str, Any] = dict(norm_eps=1e-6, act="gelu", mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear")
    if arch is not None:
        if arch not in ARCHS:
            raise MappingError(f"{source}: unknown torchvision arch {arch!r}; known: {', '.join(ARCHS)}")
        defaults["num_heads"] = ARCHS[arch][2]
    return infer_vit_config(state, source, **{**defaults, **known}), state


def export_state(model: VisionTransformer) -> dict[str, torch.Tensor]:
    """vitlab -> torchvision state dict (square, class token, no dist token / fc_norm)."""
    cfg = model.config
    require_plain_vit(cfg, "torchvision")
    if (cfg.img_size[0] != cfg.img_size[1] or not cfg.class_token or cfg.dist_token or cfg.fc_norm
            or cfg.global_pool != "token" or cfg.stem != "patch" or cfg.pos_embed != "learn" or cfg.act != "gelu"
            or not cfg.qkv_bias):
        raise MappingError("export to torchvision: needs a square input, class-token pooling, exact GELU, qkv bias, "
                           "a patch stem and a learned position table")
    return from_vitlab(model.state_dict(), RULES, cfg.depth, "torchvision")


def build_torchvision(cfg: ViTConfig) -> nn.Module:
    """torchvision's VisionTransformer for a config (eps from the config)."""
    from functools import partial

    from torchvision.models.vision_transformer import VisionTransformer as TvViT

    return TvViT(image_size=cfg.img_size[0], patch_size=cfg.patch_size, num_layers=cfg.depth, num_heads=cfg.num_heads,
                 hidden_dim=cfg.embed_dim, mlp_dim=cfg.mlp_dim, num_classes=cfg.num_classes,
                 representation_size=cfg.representation_size, norm_layer=partial(nn.LayerNorm, eps=cfg.norm_eps))


# ------------------------------------------------------------ the format table's row (formats.py)
def source_from(theirs: Mapping[str, torch.Tensor], source: str, known: Mapping[str, Any]) -> Source:
    """A torchvision ``vit_*`` state dict in vitlab's layout."""
    cfg, state = import_state(theirs, source, **known)
    return Source(cfg, state, [], {})


def write_file(model: VisionTransformer, path: Path, class_names: list[str], info: Mapping[str, Any]) -> None:
    """A plain torch state dict with torchvision's names."""
    write_torch(path, export_state(model))


def peer(path: Path, cfg: ViTConfig) -> Forward:
    """torchvision's VisionTransformer for ``cfg`` holding the file's tensors unchanged."""
    model = build_torchvision(cfg).eval()
    model.load_state_dict(read_torch(path), strict=True)
    return model
