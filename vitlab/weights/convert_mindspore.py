"""mindcv ViT (MindSpore) <-> vitlab.

mindcv 0.3.0 names its ViT parameters as timm does, except LayerNorm's ``gamma`` / ``beta``.
Newer mindcv keeps the ``blocks.*`` body but puts the classifier in a ``DenseHead``
(``head.classifier.*``). mindcv <= 0.2 and mindvision (whose ``vit_b_16_224.ckpt`` the MindSpore
ViT tutorial loads) use ``backbone.transformer.layers.{i}.{0,1}.cell.{0,1}...`` names; all three
layouts are read, 0.3.0's is written. Its
numerics are MindSpore's defaults, not PyTorch's: ``nn.LayerNorm`` eps 1e-7 and ``nn.GELU`` with
the tanh approximation; they are carried into the config (``norm_eps``, ``act``) so an imported
model computes what MindSpore computes. Training checkpoints also hold optimizer moments and
counters; those are skipped and reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vitlab.models.vit import VisionTransformer
from vitlab.models.vit_config import ViTConfig
from vitlab.weights.errors import MappingError
from vitlab.weights.infer import infer_vit_config
from vitlab.weights.keymap import Rule, block_depth, from_vitlab, require_plain_vit, to_vitlab
from vitlab.weights.mindspore_ckpt import write_ckpt
from vitlab.weights.source import Source

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


# mindcv <= 0.2 / mindvision (the MindSpore ViT tutorial's ``vit_b_16_224.ckpt``): a BaseClassifier
# with ``backbone.`` (ViT: ResidualCell(SequentialCell([norm, attention])) per sub-layer) and ``head.``
_T = "transformer.layers.{i}."
LEGACY_RULES: tuple[Rule, ...] = (
    Rule("cls_token", "cls_token", optional=True),
    Rule("pos_embed", "pos_embedding"),
    Rule("patch_embed.proj.weight", "patch_embedding.conv.weight"),
    Rule("patch_embed.proj.bias", "patch_embedding.conv.bias"),
    *_ln("blocks.{i}.norm1", _T + "0.cell.0"),
    Rule("blocks.{i}.attn.qkv.weight", _T + "0.cell.1.qkv.weight"),
    Rule("blocks.{i}.attn.qkv.bias", _T + "0.cell.1.qkv.bias"),
    Rule("blocks.{i}.attn.proj.weight", _T + "0.cell.1.out.weight"),
    Rule("blocks.{i}.attn.proj.bias", _T + "0.cell.1.out.bias"),
    *_ln("blocks.{i}.norm2", _T + "1.cell.0"),
    Rule("blocks.{i}.mlp.fc1.weight", _T + "1.cell.1.dense1.weight"),
    Rule("blocks.{i}.mlp.fc1.bias", _T + "1.cell.1.dense1.bias"),
    Rule("blocks.{i}.mlp.fc2.weight", _T + "1.cell.1.dense2.weight"),
    Rule("blocks.{i}.mlp.fc2.bias", _T + "1.cell.1.dense2.bias"),
    *_ln("norm", "norm"),
    Rule("pre_logits.0.weight", "head.classifier.0.classifier.weight", optional=True),  # MultilayerDenseHead, tanh
    Rule("pre_logits.0.bias", "head.classifier.0.classifier.bias", optional=True),
    Rule("head.weight", "head.classifier.weight", optional=True),
    Rule("head.bias", "head.classifier.bias", optional=True),
)


def _legacy_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``backbone.``; older MindSpore named the class token ``cls``; the tutorial's own
    ViT calls its head ``dense``; a two-layer head's last layer is the classifier."""
    out = {}
    for k, v in weights.items():
        k = k[len("backbone."):] if k.startswith("backbone.") else k
        k = {"cls": "cls_token", "dense.weight": "head.classifier.weight", "dense.bias": "head.classifier.bias",
             "head.classifier.1.classifier.weight": "head.classifier.weight",
             "head.classifier.1.classifier.bias": "head.classifier.bias"}.get(k, k)
        out[k] = v
    return out


def _dense_head_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Newer mindcv's ``DenseHead`` (``head.classifier.weight``) -> 0.3.0's ``head.weight``; a
    ``backbone.`` prefix (mindcv's BaseClassifier) is stripped."""
    out = {}
    for k, v in weights.items():
        k = k[len("backbone."):] if k.startswith("backbone.") else k
        out[{"head.classifier.weight": "head.weight", "head.classifier.bias": "head.bias"}.get(k, k)] = v
    return out


def is_training_state(key: str) -> bool:
    return key.startswith(OPTIMIZER_PREFIXES) or key in BOOKKEEPING


def import_state(theirs: Mapping[str, torch.Tensor], source: str = "mindspore",
                 **known: Any) -> tuple[ViTConfig, dict[str, torch.Tensor], list[str]]:
    """(config, vitlab state, skipped optimizer / counter keys) from a mindcv ViT checkpoint."""
    ignored = sorted(k for k in theirs if is_training_state(k))
    weights = {k: v.float() if v.is_floating_point() else v for k, v in theirs.items() if not is_training_state(k)}
    if any(".0.cell.1.qkv.weight" in k for k in weights):  # mindcv <= 0.2 / mindvision layout
        weights = _legacy_names(weights)
        depth = block_depth(weights, r"transformer\.layers\.(\d+)\.")
        state = to_vitlab(weights, LEGACY_RULES, depth, source)
    else:
        weights = _dense_head_names(weights)
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


# ------------------------------------------------------------ the format table's row (formats.py)
def source_from(theirs: Mapping[str, torch.Tensor], source: str, known: Mapping[str, Any]) -> Source:
    """A mindcv checkpoint in vitlab's layout; skipped optimizer / counter keys go to ``info``."""
    cfg, state, ignored = import_state(theirs, source, **known)
    return Source(cfg, state, [], {"ignored_keys": ignored})


def write_file(model: VisionTransformer, path: Path, class_names: list[str], info: Mapping[str, Any]) -> None:
    """A MindSpore .ckpt with mindcv's parameter names."""
    write_ckpt(path, export_state(model))
