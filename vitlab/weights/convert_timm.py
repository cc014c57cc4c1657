"""timm ``vit_*`` / ``deit_*`` state dicts <-> vitlab.

vitlab's ViT keeps timm's parameter names, so the map is (almost) the identity, but it is still
spelled out key by key so that an unknown or missing key is reported, not silently dropped.
Conventions carried over: LayerNorm eps 1e-6, exact GELU; DeiT's distillation token and
``head_dist``; ``no_embed_class`` tables (no class entry) get a zero class entry, which adds
nothing to the class token, so the function is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitlab.models.vit import VisionTransformer
from vitlab.models.vit_config import ViTConfig
from vitlab.weights.errors import MappingError
from vitlab.weights.infer import infer_vit_config
from vitlab.weights.io import read_state, write_safetensors, write_torch
from vitlab.weights.keymap import Rule, block_depth, from_vitlab, require_plain_vit, to_vitlab
from vitlab.weights.source import Forward, Source

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

RULES: tuple[Rule, ...] = (
    Rule("cls_token", "cls_token", optional=True),
    Rule("dist_token", "dist_token", optional=True),
    Rule("pos_embed", "pos_embed", optional=True),
    Rule("patch_embed.proj.weight", "patch_embed.proj.weight"),
    Rule("patch_embed.proj.bias", "patch_embed.proj.bias"),
    Rule("blocks.{i}.norm1.weight", "blocks.{i}.norm1.weight"),
    Rule("blocks.{i}.norm1.bias", "blocks.{i}.norm1.bias"),
    Rule("blocks.{i}.attn.qkv.weight", "blocks.{i}.attn.qkv.weight"),
    Rule("blocks.{i}.attn.qkv.bias", "blocks.{i}.attn.qkv.bias", optional=True),
    Rule("blocks.{i}.attn.proj.weight", "blocks.{i}.attn.proj.weight"),
    Rule("blocks.{i}.attn.proj.bias", "blocks.{i}.attn.proj.bias"),
    Rule("blocks.{i}.norm2.weight", "blocks.{i}.norm2.weight"),
    Rule("blocks.{i}.norm2.bias", "blocks.{i}.norm2.bias"),
    Rule("blocks.{i}.mlp.fc1.weight", "blocks.{i}.mlp.fc1.weight"),
    Rule("blocks.{i}.mlp.fc1.bias", "blocks.{i}.mlp.fc1.bias"),
    Rule("blocks.{i}.mlp.fc2.weight", "blocks.{i}.mlp.fc2.weight"),
    Rule("blocks.{i}.mlp.fc2.bias", "blocks.{i}.mlp.fc2.bias"),
    Rule("norm.weight", "norm.weight", optional=True),
    Rule("norm.bias", "norm.bias", optional=True),
    Rule("fc_norm.weight", "fc_norm.weight", optional=True),
    Rule("fc_norm.bias", "fc_norm.bias", optional=True),
    Rule("head.weight", "head.weight", optional=True),
    Rule("head.bias", "head.bias", optional=True),
    Rule("head_dist.weight", "head_dist.weight", optional=True),
    Rule("head_dist.bias", "head_dist.bias", optional=True),
)


def import_state(theirs: Mapping[str, torch.Tensor], source: str = "timm", **known: Any) -> tuple[ViTConfig, dict]:
    """(config, vitlab state dict) from a timm ViT / DeiT state dict. ``known`` overrides config fields."""
    theirs = dict(theirs)
    depth = block_depth(theirs, r"blocks\.(\d+)\.")
    state = to_vitlab(theirs, RULES, depth, source)
    n_prefix = int("cls_token" in state) + int("dist_token" in state)
    if "pos_embed" in state and n_prefix:  # a table without prefix entries (timm's no_embed_class)
        pos = state["pos_embed"]
        n_pos = pos.shape[1]
        if not _is_grid(n_pos - n_prefix, known.get("img_size"), state) and _is_grid(n_pos, known.get("img_size"), state):
            state["pos_embed"] = torch.cat([pos.new_zeros(1, n_prefix, pos.shape[2]), pos], 1)
    defaults = dict(norm_eps=1e-6, act="gelu")
    if "dist_token" in state:  # DeiT: ImageNet statistics
        defaults.update(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    cfg = infer_vit_config(state, source, **{**defaults, **known})
    return cfg, state


def _is_grid(n: int, img_size: Any, state: Mapping[str, torch.Tensor]) -> bool:
    import math

    from vitlab.layers import to_2tuple

    p = state["patch_embed.proj.weight"].shape[-1]
    if img_size is not None:
        h, w = to_2tuple(img_size)
        if (h // p) * (w // p) == n:
            return True
    return n > 0 and math.isqrt(n) ** 2 == n


def export_state(model: VisionTransformer) -> dict[str, torch.Tensor]:
    """vitlab model -> timm state dict (loads into ``timm`` with :func:`timm_kwargs`)."""
    cfg = _cfg(model)
    require_plain_vit(cfg, "timm")
    if cfg.representation_size:
        raise MappingError("export to timm: timm's VisionTransformer has no pre-logits layer (representation_size)")
    if cfg.stem != "patch" or cfg.pos_embed != "learn":
        raise MappingError(f"export to timm: stem {cfg.stem!r} / pos_embed {cfg.pos_embed!r} have no timm ViT equivalent here")
    return from_vitlab(model.state_dict(), RULES, cfg.depth, "timm")


def timm_kwargs(cfg: ViTConfig) -> dict[str, Any]:
    """JSON-friendly keyword arguments of timm's ``VisionTransformer`` (or ``VisionTransformerDistilled``)."""
    kw: dict[str, Any] = dict(
        img_size=list(cfg.img_size), patch_size=cfg.patch_size, in_chans=cfg.in_chans, num_classes=cfg.num_classes,
        embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_dim / cfg.embed_dim,
        qkv_bias=cfg.qkv_bias, class_token=cfg.class_token, global_pool=cfg.global_pool, fc_norm=cfg.fc_norm,
    )
    return kw


def build_timm(cfg: ViTConfig) -> nn.Module:
    """The timm model for a config (needs timm); eps and activation follow the config."""
    from functools import partial

    from timm.layers import GELUTanh
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    kw = timm_kwargs(cfg)
    kw["img_size"] = tuple(kw["img_size"])
    kw["norm_layer"] = partial(nn.LayerNorm, eps=cfg.norm_eps)
    kw["act_layer"] = {"gelu": nn.GELU, "gelu_tanh": GELUTanh, "relu": nn.ReLU}[cfg.act]
    if cfg.dist_token:
        kw.pop("class_token"), kw.pop("fc_norm")
        return VisionTransformerDistilled(**kw)
    return TimmViT(**kw)


def _cfg(model: nn.Module) -> ViTConfig:
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, ViTConfig):
        raise MappingError(f"{type(model).__name__} has no ViTConfig; build it with create_model()")
    return cfg


# ------------------------------------------------------------ the format table's row (formats.py)
_HYBRID_KEY = "patch_embed.backbone.stem.conv.weight"  # a ResNet-ViT hybrid (convert_timm_hybrid)


def is_timm(path: Path) -> bool:
    """A timm state-dict file by suffix, or a timm hub folder (config.json naming an ``architecture``)."""
    if path.is_dir():
        return "architecture" in _hub_config(path)
    return path.suffix.lower() in (".safetensors", ".pth", ".pt", ".bin")


def _hub_config(folder: Path) -> dict[str, Any]:
    cfg = folder / "config.json"
    if not cfg.is_file():
        return {}
    try:
        data = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _weights_file(path: Path) -> Path:
    if not path.is_dir():
        return path
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    raise MappingError(f"{path}: a timm hub folder needs model.safetensors or pytorch_model.bin")


def read_file(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a timm file or hub folder."""
    return read_state(_weights_file(path))


def file_facts(path: Path) -> dict[str, Any]:
    """What a timm file states about its architecture, independently of its shapes.

    A hub folder's config.json (``architecture``, ``model_args``, ``pretrained_cfg``), or the
    ``timm_kwargs`` / ``numerics`` metadata vitlab writes into a timm .safetensors. ``{}`` for a
    bare state dict, which states nothing beyond its shapes.
    """
    if path.is_dir():
        hub = _hub_config(path)
        kwargs = dict(hub.get("model_args") or {})
        if "num_classes" in hub:
            kwargs.setdefault("num_classes", hub["num_classes"])
        return {"architecture": hub.get("architecture"), "kwargs": kwargs,
                "pretrained_cfg": dict(hub.get("pretrained_cfg") or {})}
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        kwargs = json.loads(meta["timm_kwargs"]) if "timm_kwargs" in meta else {}
        numerics = json.loads(meta["numerics"]) if "numerics" in meta else {}
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError):
        return {}
    return {"architecture": meta.get("architecture") or None, "kwargs": kwargs, "numerics": numerics} if kwargs else {}


def stated_fields(facts: Mapping[str, Any]) -> dict[str, Any]:
    """ViTConfig fields a timm file's own description fixes (heads, pooling, numerics, preprocessing)."""
    out: dict[str, Any] = {}
    arch = facts.get("architecture")
    if arch:
        from vitlab.registry import build_model, is_model

        if is_model(arch):  # vitlab registers timm's ViT names with timm's configs
            with torch.device("meta"):
                ref = build_model(arch).config
            out.update(num_heads=ref.num_heads, global_pool=ref.global_pool, norm_eps=ref.norm_eps, act=ref.act)
    kwargs = facts.get("kwargs") or {}
    out.update({k: kwargs[k] for k in ("num_heads", "global_pool") if k in kwargs})
    out.update({k: v for k, v in (facts.get("numerics") or {}).items() if k in ("norm_eps", "act")})
    pre = facts.get("pretrained_cfg") or {}
    if "mean" in pre and "std" in pre:
        out.update(mean=tuple(pre["mean"]), std=tuple(pre["std"]))
    return out


def source_from(theirs: Mapping[str, torch.Tensor], source: str, known: Mapping[str, Any]) -> Source:
    """A timm state dict (plain ViT / DeiT, or the ResNet hybrid) in vitlab's layout.

    What the file states about itself (:func:`file_facts`) fills fields the caller did not give;
    ``info["stated"]`` lists them.
    """
    stated = stated_fields(file_facts(Path(source)))
    known = {**stated, **known}
    if _HYBRID_KEY in theirs:
        from vitlab.weights.convert_timm_hybrid import import_state as import_hybrid

        cfg, state = import_hybrid(theirs, source, **known)
    else:
        cfg, state = import_state(theirs, source, **known)
    return Source(cfg, state, [], {"stated": sorted(stated)})


def write_file(model: VisionTransformer, path: Path, class_names: list[str], info: Mapping[str, Any]) -> None:
    """timm's layout: .safetensors (with timm's keyword arguments and the numerics in its metadata,
    so the file describes itself) or a plain torch state dict, by suffix."""
    if model.config.stem == "resnetv2":
        from vitlab.weights.convert_timm_hybrid import export_state as export_hybrid

        state = export_hybrid(model)
    else:
        state = export_state(model)
    if path.suffix == ".safetensors":
        numerics = {"norm_eps": model.config.norm_eps, "act": model.config.act}
        write_safetensors(path, state, {"format": "pt", "timm_kwargs": json.dumps(timm_kwargs(model.config)),
                                        "numerics": json.dumps(numerics),
                                        "architecture": str(getattr(model, "model_name", "") or "")})
    else:
        write_torch(path, state)


def _peer_from_facts(facts: Mapping[str, Any], cfg: ViTConfig) -> nn.Module | None:
    """timm's model built from the file's own description (None when it states none)."""
    import timm

    arch, kwargs = facts.get("architecture"), dict(facts.get("kwargs") or {})
    if arch and arch in timm.list_models():
        return timm.create_model(arch, pretrained=False, **kwargs)
    if not kwargs:
        return None
    from functools import partial

    from timm.layers import GELUTanh
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    numerics = facts.get("numerics") or {}
    kwargs["img_size"] = tuple(kwargs["img_size"]) if isinstance(kwargs.get("img_size"), list) else kwargs.get("img_size", 224)
    kwargs["norm_layer"] = partial(nn.LayerNorm, eps=float(numerics.get("norm_eps", 1e-6)))
    kwargs["act_layer"] = {"gelu": nn.GELU, "gelu_tanh": GELUTanh, "relu": nn.ReLU}[numerics.get("act", "gelu")]
    return TimmViT(**kwargs)


def peer(path: Path, cfg: ViTConfig) -> Forward:
    """timm's own model holding the file's tensors unchanged: built from what the file states about
    itself (hub config.json / timm_kwargs metadata) when it does, else from ``cfg``, the architecture
    resolved from flags, the file and published models (never from a silent guess)."""
    model = _peer_from_facts(file_facts(path), cfg) or build_timm(cfg)
    model.eval().load_state_dict(read_file(path), strict=True)
    return model


def peer_npz(path: Path, cfg: ViTConfig) -> Forward:
    """timm's VisionTransformer filled by timm's own Google .npz loader (no vitlab key map involved)."""
    from timm.models.vision_transformer import _load_weights

    model = build_timm(cfg).eval()
    _load_weights(model, str(path))
    return model
