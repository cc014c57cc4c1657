"""mindcv 0.3.0 ViT (MindSpore) <-> vitlab.

mindcv names its ViT parameters as timm does, except LayerNorm's ``gamma`` / ``beta``. Its
numerics are MindSpore's defaults, not PyTorch's: ``nn.LayerNorm`` eps 1e-7 and ``nn.GELU`` with
the tanh approximation; they are carried into the config (``norm_eps``, ``act``) so an imported
model computes what MindSpore computes. Training checkpoints also hold optimizer moments and
counters; those are skipped and reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vitlab.models.vit import VisionTransformer
from vitlab.models.vit_config import ViTConfig
from vitlab.weights.errors import MappingError
from vitlab.weights.infer import infer_vit_config
from vitlab.weights.keymap import Rule, block_depth, from_vitlab, require_plain_vit, to_vitlab

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Optimizer state and training counters that MindSpore's ModelCheckpoint saves beside the weights.
OPTIMIZER_PREFIXES = ("moments.", "adam_m.", "adam_v.", "accum.", "mean_square.", "mom.", "ema.")
BOOKKEEPING = {"learning_rate", "global_step", "beta1_power", "beta2_power", "scale_sense", "current_iterator_step",
               "last_overflow_iterator_step", "epoch_num", "step_num", "loss_scale", "momentum", "weight_decay"}


def _ln(ours: str, theirs: str, optional: bool = False) -> tuple[Rule, Rule]:
    return (Rule(f"{ours}.weight", f"{theirs}.gamma", optional=optional),
            Rule(f"{ours}.bias", f"{theirs}.beta", optional=optional))


RULES: tuple[Rule, ...] = (
    Rule("cls_token", "cls_token", optional=True),
    Rule("pos_embed", "pos_embed"),
    Rule("patch_embed.proj.weight", "patch_embed.proj.weight"),
    Rule("patch_embed.proj.bias", "patch_embed.proj.bias"),
    *_ln("blocks.{i}.norm1", "blocks.{i}.norm1"),
    Rule("blocks.{i}.attn.qkv.weight", "blocks.{i}.attn.qkv.weight"),
    Rule("blocks.{i}.attn.qkv.bias", "blocks.{i}.attn.qkv.bias", optional=True),
    Rule("blocks.{i}.attn.proj.weight", "blocks.{i}.attn.proj.weight"),
    Rule("blocks.{i}.attn.proj.bias", "blocks.{i}.attn.proj.bias"),
    *_ln("blocks.{i}.norm2", "blocks.{i}.norm2"),
    Rule("blocks.{i}.mlp.fc1.weight", "blocks.{i}.mlp.fc1.weight"),
    Rule("blocks.{i}.mlp.fc1.bias", "blocks.{i}.mlp.fc1.bias"),
    Rule("blocks.{i}.mlp.fc2.weight", "blocks.{i}.mlp.fc2.weight"),
    Rule("blocks.{i}.mlp.fc2.bias", "blocks.{i}.mlp.fc2.bias"),
    *_ln("norm", "norm", optional=True),
    *_ln("fc_norm", "fc_norm", optional=True),
    Rule("head.weight", "head.weight", optional=True),
    Rule("head.bias", "head.bias", optional=True),
)


def is_training_state(key: str) -> bool:
    return key.startswith(OPTIMIZER_PREFIXES) or key in BOOKKEEPING


def import_state(theirs: Mapping[str, torch.Tensor], source: str = "mindspore",
                 **known: Any) -> tuple[ViTConfig, dict[str, torch.Tensor], list[str]]:
    """(config, vitlab state, skipped optimizer / counter keys) from a mindcv ViT checkpoint."""
    ignored = sorted(k for k in theirs if is_training_state(k))
    weights = {k: v.float() if v.is_floating_point() else v for k, v in theirs.items() if not is_training_state(k)}
    depth = block_depth(weights, r"blocks\.(\d+)\.")
    state = to_vitlab(weights, RULES, depth, source)
    defaults = dict(norm_eps=1e-7, act="gelu_tanh", mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear")
    return infer_vit_config(state, source, **{**defaults, **known}), state, ignored


def export_state(model: VisionTransformer) -> dict[str, torch.Tensor]:
    """vitlab -> mindcv parameter names (float32)."""
    cfg = model.config
    require_plain_vit(cfg, "mindspore")
    if cfg.dist_token or cfg.representation_size or cfg.stem != "patch" or cfg.pos_embed != "learn":
        raise MappingError("export to mindspore: mindcv's ViT has no distillation token, pre-logits layer, "
                           "conv stem or fixed position table")
    return {k: v.float() for k, v in from_vitlab(model.state_dict(), RULES, cfg.depth, "mindspore").items()}
