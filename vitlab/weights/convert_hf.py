"""Hugging Face transformers ViT (``ViTModel``, ``ViTForImageClassification``) <-> vitlab.

A folder holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``, or a sharded
``*.index.json``). HF keeps q, k and v as three Linear layers; vitlab fuses them (rows q | k | v),
so the map concatenates on import (:func:`cat0`) and splits on export (:func:`split3`).
Numerics come from config.json: ``layer_norm_eps`` (HF's default is 1e-12, not 1e-6) and
``hidden_act``. ``ViTModel``'s pooler (Linear + tanh on the class token) is vitlab's pre-logits
layer (``representation_size``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitlab.models.vit import VisionTransformer
from vitlab.models.vit_config import ViTConfig
from vitlab.weights.errors import MalformedFileError, MappingError
from vitlab.weights.infer import infer_vit_config
from vitlab.weights.io import read_folder_state, read_json, write_safetensors
from vitlab.weights.keymap import Rule, block_depth, cat0, from_vitlab, require_plain_vit, split3, to_vitlab
from vitlab.weights.source import Forward, Source

_ACTS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh", "relu": "relu"}
_ACTS_BACK = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
# PIL's resampling filters, as image processors store them (``resample``)
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
_RESAMPLE_BACK = {v: k for k, v in _RESAMPLE.items()}
# ConvNext's processor resizes the shorter side to size / crop_pct and centre-crops (timm's eval
# transform) only below this size; at or above it, it squashes to the size without a crop.
_CONVNEXT_CROP_BELOW = 384


def processor_preprocess(pre: Mapping[str, Any], source: str) -> dict[str, Any]:
    """crop_pct, crop_mode and interpolation of an image processor config.

    ``ViTImageProcessor`` resizes both sides to ``size`` (vitlab: crop_mode "squash", crop_pct 1);
    ``ConvNextImageProcessor`` below 384 px resizes the shorter side to size / crop_pct and crops
    the centre (crop_mode "center"), as CLIP's does with ``shortest_edge`` + ``crop_size``; DeiT's /
    BEiT's squash to ``size`` and crop ``crop_size`` (crop_pct = crop / size). Its ``resample`` (a
    PIL filter number) is the interpolation.
    A folder without one gets what transformers' ViT processor does by default (squash, bilinear).
    """
    resample = pre.get("resample", 2)
    if resample not in _RESAMPLE:
        raise MappingError(f"{source}: preprocessor_config.json resample {resample!r} is not a filter vitlab applies "
                           "(0 nearest, 2 bilinear, 3 bicubic)")
    out: dict[str, Any] = {"interpolation": _RESAMPLE[resample], "crop_pct": 1.0, "crop_mode": "squash"}
    size = pre.get("size") or {}
    size = {"shortest_edge": size} if isinstance(size, int) else size
    crop = pre.get("crop_size") if pre.get("do_center_crop") else None
    crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
    if "shortest_edge" in size:  # the shorter side to a size, then (CLIP, ConvNext) a centre crop
        pct = float(crop["height"]) / size["shortest_edge"] if crop else 1.0
        if not crop and pre.get("crop_pct") and size["shortest_edge"] < _CONVNEXT_CROP_BELOW:
            pct = float(pre["crop_pct"])
        out.update(crop_pct=pct, crop_mode="center")
    elif crop and "height" in size:  # DeiT, BEiT: both sides to a size, then a centre crop
        pct_h, pct_w = crop["height"] / size["height"], crop["width"] / size["width"]
        if abs(pct_h - pct_w) > 1e-9 or pct_h > 1:
            raise MappingError(f"{source}: preprocessor_config.json crops {crop} out of {size}: not one crop fraction")
        out.update(crop_pct=float(pct_h))
    return out


def rules(prefix: str) -> tuple[Rule, ...]:
    """The key map with the backbone under ``prefix`` ("vit." for the classifier, "" for ViTModel)."""
    p, layer = prefix, f"{prefix}encoder.layer.{{i}}."
    att = f"{layer}attention.attention."
    return (
        Rule("cls_token", f"{p}embeddings.cls_token"),
        Rule("pos_embed", f"{p}embeddings.position_embeddings"),
        Rule("patch_embed.proj.weight", f"{p}embeddings.patch_embeddings.projection.weight"),
        Rule("patch_embed.proj.bias", f"{p}embeddings.patch_embeddings.projection.bias"),
        Rule("blocks.{i}.norm1.weight", f"{layer}layernorm_before.weight"),
        Rule("blocks.{i}.norm1.bias", f"{layer}layernorm_before.bias"),
        Rule("blocks.{i}.attn.qkv.weight", (f"{att}query.weight", f"{att}key.weight", f"{att}value.weight"), cat0, split3),
        Rule("blocks.{i}.attn.qkv.bias", (f"{att}query.bias", f"{att}key.bias", f"{att}value.bias"), cat0, split3,
             optional=True),
        Rule("blocks.{i}.attn.proj.weight", f"{layer}attention.output.dense.weight"),
        Rule("blocks.{i}.attn.proj.bias", f"{layer}attention.output.dense.bias"),
        Rule("blocks.{i}.norm2.weight", f"{layer}layernorm_after.weight"),
        Rule("blocks.{i}.norm2.bias", f"{layer}layernorm_after.bias"),
        Rule("blocks.{i}.mlp.fc1.weight", f"{layer}intermediate.dense.weight"),
        Rule("blocks.{i}.mlp.fc1.bias", f"{layer}intermediate.dense.bias"),
        Rule("blocks.{i}.mlp.fc2.weight", f"{layer}output.dense.weight"),
        Rule("blocks.{i}.mlp.fc2.bias", f"{layer}output.dense.bias"),
        Rule("norm.weight", f"{p}layernorm.weight"),
        Rule("norm.bias", f"{p}layernorm.bias"),
        Rule("pre_logits.0.weight", f"{p}pooler.dense.weight", optional=True),
        Rule("pre_logits.0.bias", f"{p}pooler.dense.bias", optional=True),
        Rule("head.weight", "classifier.weight", optional=True),
        Rule("head.bias", "classifier.bias", optional=True),
    )


def rules_in_memory(prefix: str) -> tuple[Rule, ...]:
    """transformers 5.x's in-memory module names (``layers.{i}.attention.q_proj``, ``mlp.fc1``); files
    written by ``save_pretrained`` still use the names of :func:`rules`, which is what export writes."""
    layer = f"{prefix}layers.{{i}}."
    att = f"{layer}attention."
    legacy = {r.ours: r for r in rules(prefix)}
    renamed = {
        "blocks.{i}.norm1.weight": f"{layer}layernorm_before.weight", "blocks.{i}.norm1.bias": f"{layer}layernorm_before.bias",
        "blocks.{i}.attn.proj.weight": f"{att}o_proj.weight", "blocks.{i}.attn.proj.bias": f"{att}o_proj.bias",
        "blocks.{i}.norm2.weight": f"{layer}layernorm_after.weight", "blocks.{i}.norm2.bias": f"{layer}layernorm_after.bias",
        "blocks.{i}.mlp.fc1.weight": f"{layer}mlp.fc1.weight", "blocks.{i}.mlp.fc1.bias": f"{layer}mlp.fc1.bias",
        "blocks.{i}.mlp.fc2.weight": f"{layer}mlp.fc2.weight", "blocks.{i}.mlp.fc2.bias": f"{layer}mlp.fc2.bias",
    }
    out = []
    for ours, rule in legacy.items():
        if ours == "blocks.{i}.attn.qkv.weight":
            out.append(Rule(ours, (f"{att}q_proj.weight", f"{att}k_proj.weight", f"{att}v_proj.weight"), cat0, split3))
        elif ours == "blocks.{i}.attn.qkv.bias":
            out.append(Rule(ours, (f"{att}q_proj.bias", f"{att}k_proj.bias", f"{att}v_proj.bias"), cat0, split3, optional=True))
        elif ours in renamed:
            out.append(Rule(ours, renamed[ours]))
        else:
            out.append(rule)
    return tuple(out)


def read_folder(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(state dict, config.json, preprocessor_config.json or {}) of a HF model folder."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not folder.is_dir() or not cfg_path.is_file():
        raise MalformedFileError(f"{folder}: not a Hugging Face model folder (no config.json)")
    config, pre = read_json(cfg_path), read_json(folder / "preprocessor_config.json")
    if config.get("model_type", "vit") != "vit":
        raise MappingError(f"{folder}: model_type {config.get('model_type')!r} is not 'vit'")
    return read_folder_state(folder), config, pre


def import_state(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], pre: Mapping[str, Any] | None = None,
                 source: str = "hf", **known: Any) -> tuple[ViTConfig, dict, list[str]]:
    """(vitlab config, vitlab state, class names) from a HF ViT state dict and its config.json."""
    state = dict(state)
    known.pop("img_size", None)  # the native size is in config.json; callers resample afterwards
    prefix = "vit." if any(k.startswith("vit.") for k in state) else ""
    in_memory = any(k.startswith(f"{prefix}layers.") for k in state)
    layer_rx = r"layers\.(\d+)\." if in_memory else r"encoder\.layer\.(\d+)\."
    depth = block_depth(state, re.escape(prefix) + layer_rx)
    key_map = rules_in_memory(prefix) if in_memory else rules(prefix)
    ours = to_vitlab(state, key_map, depth, source, ignore=lambda k: k.endswith("embeddings.mask_token"))
    act = config.get("hidden_act", "gelu")
    if act not in _ACTS:
        raise MappingError(f"{source}: hidden_act {act!r} is not supported")
    if "pre_logits.0.weight" in ours and config.get("pooler_act", "tanh") != "tanh":
        raise MappingError(f"{source}: pooler_act {config.get('pooler_act')!r}; vitlab's pre-logits layer uses tanh")
    img = config.get("image_size", 224)
    pre = pre or {}
    fields: dict[str, Any] = dict(
        num_heads=int(config.get("num_attention_heads", 12)), norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        act=_ACTS[act], img_size=tuple(img) if isinstance(img, (list, tuple)) else (int(img), int(img)),
        mean=tuple(pre.get("image_mean", (0.5, 0.5, 0.5))), std=tuple(pre.get("image_std", (0.5, 0.5, 0.5))),
        **{k: v for k, v in processor_preprocess(pre, source).items() if k != "crop_mode"},
    )
    cfg = infer_vit_config(ours, source, **{**fields, **known})
    id2label = config.get("id2label") or {}
    names = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(cfg.num_classes)]
    return cfg, ours, names


def check_exportable(cfg: ViTConfig) -> None:
    require_plain_vit(cfg, "hf")
    bad = []
    if not cfg.class_token or cfg.dist_token or cfg.global_pool != "token" or cfg.fc_norm:
        bad.append("HF ViT pools the class token only (no dist token, avg pool or fc_norm)")
    if cfg.stem != "patch" or cfg.pos_embed != "learn":
        bad.append(f"stem {cfg.stem!r} / pos_embed {cfg.pos_embed!r}")
    if cfg.representation_size and cfg.num_classes:
        bad.append("ViTForImageClassification has no pre-logits layer (representation_size)")
    if bad:
        raise MappingError("export to hf: " + "; ".join(bad))


def export_state(model: VisionTransformer) -> dict[str, torch.Tensor]:
    """vitlab -> HF state dict: ViTForImageClassification if it has a head, else ViTModel."""
    cfg = model.config
    check_exportable(cfg)
    prefix = "vit." if cfg.num_classes else ""
    return from_vitlab(model.state_dict(), rules(prefix), cfg.depth, "hf")


def hf_config(cfg: ViTConfig, class_names: list[str] | None = None) -> dict[str, Any]:
    """config.json for a vitlab config."""
    h, w = cfg.img_size
    out: dict[str, Any] = {
        "architectures": ["ViTForImageClassification" if cfg.num_classes else "ViTModel"], "model_type": "vit",
        "hidden_size": cfg.embed_dim, "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.mlp_dim, "hidden_act": _ACTS_BACK[cfg.act], "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02, "layer_norm_eps": cfg.norm_eps,
        "image_size": h if h == w else [h, w], "patch_size": cfg.patch_size, "num_channels": cfg.in_chans,
        "qkv_bias": cfg.qkv_bias, "encoder_stride": cfg.patch_size, "torch_dtype": "float32",
    }
    if cfg.representation_size:
        out["pooler_output_size"], out["pooler_act"] = cfg.representation_size, "tanh"
    if cfg.num_classes:
        names = list(class_names) if class_names and len(class_names) == cfg.num_classes else [f"LABEL_{i}" for i in range(cfg.num_classes)]
        out["id2label"] = {str(i): n for i, n in enumerate(names)}
        out["label2id"] = {n: i for i, n in enumerate(names)}
    return out


def processor_config(cfg: ViTConfig, crop_mode: str = "center") -> dict[str, Any]:
    """preprocessor_config.json that gives the model's own eval preprocessing in transformers.

    Squash (or no crop at all: crop_pct 1 on a square input) is ``ViTImageProcessor``; a centre
    crop is ``ConvNextImageProcessor`` (shorter side to size / crop_pct, then the crop), which
    transformers applies only below 384 px: above that, and for non-square inputs, export refuses
    rather than write a processor that prepares images differently.
    """
    h, w = cfg.img_size
    common = {"do_resize": True, "resample": _RESAMPLE_BACK[cfg.interpolation], "do_rescale": True,
              "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(cfg.mean), "image_std": list(cfg.std)}
    if crop_mode == "squash" or (cfg.crop_pct == 1.0 and h == w):
        # crop_pct < 1 in squash mode: both sides to size / crop_pct, then a crop; ViT's processor has no crop
        if cfg.crop_pct != 1.0:
            raise MappingError(f"export to hf: ViTImageProcessor cannot crop (crop_mode squash, crop_pct {cfg.crop_pct})")
        return {"image_processor_type": "ViTImageProcessor", "size": {"height": h, "width": w}, **common}
    if h != w or h >= _CONVNEXT_CROP_BELOW:
        raise MappingError(f"export to hf: no transformers image processor centre-crops a {h}x{w} input at crop_pct "
                           f"{cfg.crop_pct} (ConvNext's does below {_CONVNEXT_CROP_BELOW} px, square); for ViT's processor "
                           "set crop_pct 1.0 and pretrained_cfg crop_mode 'squash'")
    return {"image_processor_type": "ConvNextImageProcessor", "size": {"shortest_edge": h}, "crop_pct": cfg.crop_pct,
            **common}


def write_folder(model: VisionTransformer, folder: str | Path, class_names: list[str] | None = None) -> None:
    """config.json + preprocessor_config.json + model.safetensors that ``from_pretrained`` loads."""
    folder = Path(folder)
    cfg = model.config
    state = export_state(model)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config(cfg, class_names), indent=2))
    pre = processor_config(cfg, (getattr(model, "pretrained_cfg", None) or {}).get("crop_mode", "center"))
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    write_safetensors(folder / "model.safetensors", state, {"format": "pt"})


def build_hf(cfg: ViTConfig) -> nn.Module:
    """The transformers model for a config (needs transformers), eager attention, eval mode."""
    from transformers import ViTConfig as HFConfig
    from transformers import ViTForImageClassification, ViTModel

    check_exportable(cfg)
    hc = HFConfig(**{k: v for k, v in hf_config(cfg).items() if k not in ("architectures", "model_type", "torch_dtype")})
    if cfg.num_classes:
        return ViTForImageClassification(hc).eval()
    return ViTModel(hc, add_pooling_layer=bool(cfg.representation_size)).eval()


# ------------------------------------------------------------ the format table's row (formats.py)
def source_from(raw: tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]], source: str,
                known: Mapping[str, Any]) -> Source:
    """What :func:`read_folder` read (state, config.json, preprocessor config) in vitlab's layout."""
    theirs, config, pre = raw
    cfg, state, names = import_state(theirs, config, pre, source, **known)
    crop_mode = processor_preprocess(pre, source).get("crop_mode")
    return Source(cfg, state, names, {"preprocess": {"crop_mode": crop_mode}} if crop_mode else {})


def write_file(model: VisionTransformer, path: Path, class_names: list[str], info: Mapping[str, Any]) -> None:
    """A folder that ``from_pretrained`` loads (see :func:`write_folder`)."""
    write_folder(model, path, class_names)


def peer(path: Path, cfg: ViTConfig) -> Forward:
    """transformers' own model loaded from the folder with ``from_pretrained``."""
    import transformers

    if cfg.num_classes:
        model = transformers.ViTForImageClassification.from_pretrained(path).eval()
        return lambda x: model(pixel_values=x).logits
    model = transformers.AutoModel.from_pretrained(path).eval()
    if cfg.representation_size:
        return lambda x: model(pixel_values=x).pooler_output
    return lambda x: model(pixel_values=x).last_hidden_state[:, 0]
