"""Hugging Face transformers DINOv2 (``Dinov2Model``, ``Dinov2WithRegistersModel``) -> vitlab.

A folder holds ``config.json`` (``model_type`` "dinov2" or "dinov2_with_registers") and the
weights. The block is vitlab's with LayerScale (``layer_scale1`` / ``2.lambda1`` are
``ls1`` / ``ls2.gamma``); q, k and v are three Linear layers, fused on import (rows q | k | v).
Files keep the names of transformers 4 (``attention.attention.query``); transformers 5 models in
memory use ``attention.q_proj``: both are read.

Position embeddings: ``Dinov2Model``'s table covers the class token and the patches (vitlab's
layout). ``Dinov2WithRegistersModel`` inserts the registers after the table is added, so they get
none: the class entry is folded into the class token (cls + pos[0], the same sum HF computes in
every forward) and the model gets ``no_embed_class`` (registers and class token take no position
embedding), which is the function HF computes, exactly. Only the backbones are read: the
classifier of ``Dinov2ForImageClassification`` (class token and patch mean, concatenated) and the
SwiGLU MLP of the giant models have no vitlab equivalent and are refused by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vitlab.models.vit_config import ViTConfig
from vitlab.weights.errors import MalformedFileError, MappingError
from vitlab.weights.infer import infer_vit_config
from vitlab.weights.io import read_folder_state, read_json
from vitlab.weights.keymap import Rule, block_depth, cat0, split3, to_vitlab
from vitlab.weights.source import Forward, Source

MODEL_TYPES = ("dinov2", "dinov2_with_registers")
_ACTS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "relu": "relu"}
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL filter numbers of image processors


def rules(in_memory: bool) -> tuple[Rule, ...]:
    """The key map, for the file names (transformers 4, what ``save_pretrained`` writes) or the in-memory ones."""
    layer = "encoder.layer.{i}."
    if in_memory:
        q, k, v, o = (f"{layer}attention.{n}_proj" for n in "qkvo")
    else:
        q, k, v = (f"{layer}attention.attention.{n}" for n in ("query", "key", "value"))
        o = f"{layer}attention.output.dense"
    return (
        Rule("cls_token", "embeddings.cls_token"),
        Rule("reg_token", "embeddings.register_tokens", optional=True),
        Rule("pos_embed", "embeddings.position_embeddings"),
        Rule("patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight"),
        Rule("patch_embed.proj.bias", "embeddings.patch_embeddings.projection.bias"),
        Rule("blocks.{i}.norm1.weight", f"{layer}norm1.weight"),
        Rule("blocks.{i}.norm1.bias", f"{layer}norm1.bias"),
        Rule("blocks.{i}.attn.qkv.weight", (f"{q}.weight", f"{k}.weight", f"{v}.weight"), cat0, split3),
        Rule("blocks.{i}.attn.qkv.bias", (f"{q}.bias", f"{k}.bias", f"{v}.bias"), cat0, split3, optional=True),
        Rule("blocks.{i}.attn.proj.weight", f"{o}.weight"),
        Rule("blocks.{i}.attn.proj.bias", f"{o}.bias"),
        Rule("blocks.{i}.ls1.gamma", f"{layer}layer_scale1.lambda1"),
        Rule("blocks.{i}.norm2.weight", f"{layer}norm2.weight"),
        Rule("blocks.{i}.norm2.bias", f"{layer}norm2.bias"),
        Rule("blocks.{i}.mlp.fc1.weight", f"{layer}mlp.fc1.weight"),
        Rule("blocks.{i}.mlp.fc1.bias", f"{layer}mlp.fc1.bias"),
        Rule("blocks.{i}.mlp.fc2.weight", f"{layer}mlp.fc2.weight"),
        Rule("blocks.{i}.mlp.fc2.bias", f"{layer}mlp.fc2.bias"),
        Rule("blocks.{i}.ls2.gamma", f"{layer}layer_scale2.lambda1"),
        Rule("norm.weight", "layernorm.weight"),
        Rule("norm.bias", "layernorm.bias"),
    )


def _config(folder: Path) -> dict[str, Any]:
    return read_json(folder / "config.json", strict=False)


def is_dinov2_folder(path: Path) -> bool:
    """A folder whose config.json names a DINOv2 model type."""
    return path.is_dir() and _config(path).get("model_type") in MODEL_TYPES


def read_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(state dict, config.json, preprocessor_config.json or {}) of a HF DINOv2 folder."""
    folder = Path(folder)
    config = _config(folder)
    if config.get("model_type") not in MODEL_TYPES:
        raise MalformedFileError(f"{folder}: not a Hugging Face DINOv2 folder (config.json model_type "
                                 f"{config.get('model_type')!r}, expected one of {', '.join(MODEL_TYPES)})")
    return read_folder_state(folder), config, read_json(folder / "preprocessor_config.json")


def preprocess(pre: Mapping[str, Any]) -> dict[str, Any]:
    """mean / std / interpolation / crop_pct of an image processor config (BitImageProcessor for DINOv2:
    shorter side to ``size.shortest_edge``, centre crop ``crop_size``, so crop_pct = crop / edge)."""
    out: dict[str, Any] = {}
    if "image_mean" in pre and "image_std" in pre:
        out.update(mean=tuple(pre["image_mean"]), std=tuple(pre["image_std"]))
    if pre.get("resample") in _RESAMPLE:
        out["interpolation"] = _RESAMPLE[pre["resample"]]
    edge, crop = (pre.get("size") or {}).get("shortest_edge"), (pre.get("crop_size") or {}).get("height")
    if pre.get("do_center_crop", True) and edge and crop:
        out["crop_pct"] = float(crop) / float(edge)
    return out


def import_state(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], pre: Mapping[str, Any] | None = None,
                 source: str = "hf_dinov2", **known: Any) -> tuple[ViTConfig, dict[str, torch.Tensor]]:
    """(vitlab config at the native size, vitlab state) from a DINOv2 backbone state dict and its config.json."""
    _check_supported(state, config, source)
    in_memory = any(".attention.q_proj." in k for k in state)
    depth = block_depth(state, r"encoder\.layer\.(\d+)\.")
    ours = to_vitlab(state, rules(in_memory), depth, source, ignore=lambda k: k == "embeddings.mask_token")
    if "reg_token" in ours:  # HF adds the class entry, then inserts the registers (no position for them)
        pos = ours["pos_embed"]
        ours["cls_token"] = ours["cls_token"] + pos[:, :1]
        n_prefix = 1 + ours["reg_token"].shape[1]
        ours["pos_embed"] = torch.cat([pos.new_zeros(1, n_prefix, pos.shape[2]), pos[:, 1:]], 1)
    img = config.get("image_size", 518)
    fields: dict[str, Any] = dict(
        num_heads=int(config.get("num_attention_heads", 12)), norm_eps=float(config.get("layer_norm_eps", 1e-6)),
        act=_ACTS[config.get("hidden_act", "gelu")], init_values=float(config.get("layerscale_value", 1.0)),
        img_size=tuple(img) if isinstance(img, (list, tuple)) else (int(img), int(img)),
        no_embed_class="reg_token" in ours, num_classes=0,
        # without a processor config: DINOv2's own normalisation (every facebook/dinov2* processor has it)
        **{"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), **preprocess(pre or {})},
    )
    known = {k: v for k, v in known.items() if k != "img_size"}  # callers resample from the native size
    return infer_vit_config(ours, source, **{**fields, **known}), ours


def _check_supported(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], source: str) -> None:
    """MappingError naming what vitlab's ViT cannot hold (classifier head, SwiGLU, other activations)."""
    if any(k.startswith("classifier.") or k.startswith("dinov2.") for k in state):
        raise MappingError(f"{source}: Dinov2ForImageClassification's head (class token and patch mean, "
                           "concatenated) has no vitlab equivalent; save the backbone (Dinov2Model) instead")
    if config.get("use_swiglu_ffn"):
        raise MappingError(f"{source}: use_swiglu_ffn (DINOv2 giant's SwiGLU MLP) has no vitlab equivalent")
    if config.get("hidden_act", "gelu") not in _ACTS:
        raise MappingError(f"{source}: hidden_act {config.get('hidden_act')!r} is not supported")
    if not config.get("apply_layernorm", True):
        raise MappingError(f"{source}: apply_layernorm false (no final norm) is not supported")
    if not any(re.match(r"encoder\.layer\.\d+\.", k) for k in state):
        raise MappingError(f"{source}: no encoder.layer.* blocks; not a DINOv2 backbone")


# ------------------------------------------------------------ the format table's row (formats.py)
def source_from(raw: tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]], source: str,
                known: Mapping[str, Any]) -> Source:
    """What :func:`read_folder` read in vitlab's layout; config.json states heads, eps and activation,
    and the backbone's pooling is the class token (``pooler_output``)."""
    theirs, config, pre = raw
    cfg, state = import_state(theirs, config, pre, source, **known)
    return Source(cfg, state, [], {})


def peer(path: Path, cfg: ViTConfig) -> Forward:
    """transformers' own backbone, loaded with ``from_pretrained``: images -> ``pooler_output`` (the
    normalised class token, what vitlab's features-only model returns)."""
    import transformers

    model = transformers.AutoModel.from_pretrained(path).eval()
    return lambda x: model(pixel_values=x).pooler_output
