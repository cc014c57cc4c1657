"""timm ``vit_*`` / ``deit_*`` state dicts <-> vitlab.

vitlab's ViT keeps timm's parameter names, so the map is (almost) the identity, but it is still
spelled out key by key so that an unknown or missing key is reported, not silently dropped.
Conventions carried over: LayerNorm eps 1e-6, exact GELU; DeiT's distillation token and
``head_dist``; register tokens (``reg_token``), LayerScale (``ls1`` / ``ls2.gamma``), CLIP's
``norm_pre`` and SigLIP's attention pooling (``attn_pool.*``). ``no_embed_class`` tables (no
prefix entries: DeiT-III, DINOv2 with registers) get zero prefix rows and ``no_embed_class=True``
(vitlab holds those rows at zero and never adds them); export drops the rows again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitlab.errors import ConfigError
from vitlab.layers import to_2tuple
from vitlab.models.vit import VisionTransformer
from vitlab.models.vit_config import ViTConfig
from vitlab.weights.errors import MappingError
from vitlab.weights.infer import infer_vit_config
from vitlab.weights.io import read_json, read_state, write_safetensors, write_torch
from vitlab.weights.keymap import Rule, block_depth, from_vitlab, require_plain_vit, to_vitlab
from vitlab.weights.source import Forward, Source

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

RULES: tuple[Rule, ...] = (
    Rule("cls_token", "cls_token", optional=True),
    Rule("dist_token", "dist_token", optional=True),
    Rule("reg_token", "reg_token", optional=True),
    Rule("pos_embed", "pos_embed", optional=True),
    Rule("patch_embed.proj.weight", "patch_embed.proj.weight"),
    Rule("patch_embed.proj.bias", "patch_embed.proj.bias", optional=True),  # absent under norm_pre (CLIP)
    Rule("norm_pre.weight", "norm_pre.weight", optional=True),
    Rule("norm_pre.bias", "norm_pre.bias", optional=True),
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
    Rule("blocks.{i}.ls1.gamma", "blocks.{i}.ls1.gamma", optional=True),
    Rule("blocks.{i}.ls2.gamma", "blocks.{i}.ls2.gamma", optional=True),
    Rule("norm.weight", "norm.weight", optional=True),
    Rule("norm.bias", "norm.bias", optional=True),
    Rule("fc_norm.weight", "fc_norm.weight", optional=True),
    Rule("fc_norm.bias", "fc_norm.bias", optional=True),
    *(Rule(f"attn_pool.{k}", f"attn_pool.{k}", optional=True) for k in (
        "latent", "q.weight", "q.bias", "kv.weight", "kv.bias", "proj.weight", "proj.bias", "norm.weight", "norm.bias",
        "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")),
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
    n_prefix += int(state["reg_token"].shape[1]) if "reg_token" in state else 0
    if "pos_embed" in state and n_prefix:
        known = {**known, "no_embed_class": _no_embed_class(state, n_prefix, known, source)}
        if known["no_embed_class"]:  # zero prefix rows: vitlab's one table layout (never added)
            pos = state["pos_embed"]
            state["pos_embed"] = torch.cat([pos.new_zeros(1, n_prefix, pos.shape[2]), pos], 1)
    defaults = dict(norm_eps=1e-6, act="gelu")
    if "dist_token" in state:  # DeiT: ImageNet statistics
        defaults.update(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    cfg = infer_vit_config(state, source, **{**defaults, **known})
    return cfg, state


def _no_embed_class(state: Mapping[str, torch.Tensor], n_prefix: int, known: Mapping[str, Any], source: str) -> bool:
    """Whether the position table has no prefix entries (timm's no_embed_class), from its length.

    Stated (``known``) wins. Else the length, with or without the prefix rows, must be the grid of
    the given img_size or else a square grid, one way only: a length that fits both is refused,
    naming the flags.
    """
    if known.get("no_embed_class") is not None:
        return bool(known["no_embed_class"])
    n = int(state["pos_embed"].shape[1])
    p = int(state["patch_embed.proj.weight"].shape[-1])
    if known.get("img_size") is not None:
        h, w = to_2tuple(known["img_size"])
        fits = [(h // p) * (w // p) == m for m in (n - n_prefix, n)]
        if fits.count(True) == 1:
            return fits[1]
    square = [m > 0 and math.isqrt(m) ** 2 == m for m in (n - n_prefix, n)]
    if all(square):
        raise ConfigError(f"{source}: a position table of {n} entries fits a square grid with or without its "
                          f"{n_prefix} prefix entries; pass --no-embed-class or --embed-class (or --img-size)")
    return square[1]


def _is_grid(n: int, img_size: Any, state: Mapping[str, torch.Tensor]) -> bool:
    """Whether n position entries are the grid of ``img_size`` or a square grid (the .npz reader's test)."""
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
    out = from_vitlab(model.state_dict(), RULES, cfg.depth, "timm")
    if cfg.no_embed_class:  # timm's table has no prefix rows (vitlab's are zeros, never added)
        out["pos_embed"] = out["pos_embed"][:, model.num_prefix_tokens :].contiguous()
    return out


# vitlab's activation -> the name timm's get_act_layer takes (create_model(..., act_layer="gelu_tanh"))
TIMM_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_tanh", "relu": "relu"}


def timm_kwargs(cfg: ViTConfig) -> dict[str, Any]:
    """JSON-friendly keyword arguments of timm's ``VisionTransformer`` (or ``VisionTransformerDistilled``).

    Everything but the LayerNorm eps, which timm takes only as a ``norm_layer`` callable: the
    files vitlab writes carry it beside these (``numerics``).
    """
    kw: dict[str, Any] = dict(
        img_size=list(cfg.img_size), patch_size=cfg.patch_size, in_chans=cfg.in_chans, num_classes=cfg.num_classes,
        embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_dim / cfg.embed_dim,
        qkv_bias=cfg.qkv_bias, class_token=cfg.class_token, global_pool=cfg.global_pool, fc_norm=cfg.fc_norm,
        reg_tokens=cfg.reg_tokens, no_embed_class=cfg.no_embed_class, init_values=cfg.init_values,
        pre_norm=cfg.pre_norm, act_layer=TIMM_ACT[cfg.act],
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
        kw.pop("reg_tokens")
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
    return read_json(folder / "config.json", strict=False)


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
            out.update({k: getattr(ref, k) for k in ARCH_FIELDS})
    kwargs = facts.get("kwargs") or {}
    out.update({k: kwargs[k] for k in ("num_heads", "global_pool", "no_embed_class", "init_values") if k in kwargs})
    if kwargs.get("act_layer") in TIMM_ACT.values():
        out["act"] = next(k for k, v in TIMM_ACT.items() if v == kwargs["act_layer"])
    out.update({k: v for k, v in (facts.get("numerics") or {}).items() if k in ("norm_eps", "act")})
    pre = facts.get("pretrained_cfg") or {}
    if "mean" in pre and "std" in pre:
        out.update(mean=tuple(pre["mean"]), std=tuple(pre["std"]))
    if isinstance(pre.get("crop_pct"), (int, float)):
        out["crop_pct"] = float(pre["crop_pct"])
    if pre.get("interpolation") in ("bilinear", "bicubic", "nearest"):
        out["interpolation"] = pre["interpolation"]
    return out


# What a timm architecture name fixes beyond the shapes (vitlab registers timm's names with timm's configs).
ARCH_FIELDS = ("num_heads", "global_pool", "norm_eps", "act", "init_values", "no_embed_class")


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

    from functools import partial

    from timm.layers import GELUTanh
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    arch, kwargs = facts.get("architecture"), dict(facts.get("kwargs") or {})
    numerics = facts.get("numerics") or {}
    if "img_size" in kwargs:
        kwargs["img_size"] = tuple(kwargs["img_size"]) if isinstance(kwargs["img_size"], list) else kwargs["img_size"]
    if numerics:  # what vitlab wrote beside the kwargs: eps (a norm_layer for timm) and the activation
        kwargs["norm_layer"] = partial(nn.LayerNorm, eps=float(numerics.get("norm_eps", 1e-6)))
        kwargs["act_layer"] = {"gelu": nn.GELU, "gelu_tanh": GELUTanh, "relu": nn.ReLU}[numerics.get("act", "gelu")]
    if arch and arch in timm.list_models():
        return timm.create_model(arch, pretrained=False, **kwargs)
    if not kwargs:
        return None
    kwargs.setdefault("norm_layer", partial(nn.LayerNorm, eps=1e-6))
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
