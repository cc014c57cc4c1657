"""One entry point per direction: :func:`import_weights` (any source -> vitlab model) and
:func:`export_weights` (vitlab model -> any target layout), plus :func:`detect_format`.

The formats and what each supports are the table in :mod:`vitlab.weights.formats` (sources:
vitlab, timm, hf, torchvision, npz, mindspore; targets: the same but npz). ONNX and torch.export
live in :mod:`vitlab.weights.export`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitlab.layers import to_2tuple
from vitlab.models.vit import VisionTransformer, build_vit

# module imports, not ``from vitlab.weights import``: the package's __init__ imports this module
import vitlab.weights.formats as formats  # noqa: I001
import vitlab.weights.surgery as surgery  # noqa: I001
from vitlab.weights.errors import MappingError
from vitlab.weights.formats import detect_format, read_source
from vitlab.weights.keymap import load_into
from vitlab.weights.published import resolve_unstated

# derived from the format table (vitlab/weights/formats.py)
IMPORT_FORMATS = formats.readable()
EXPORT_FORMATS = formats.writable()

__all__ = ["EXPORT_FORMATS", "IMPORT_FORMATS", "Imported", "detect_format", "export_weights", "import_weights",
           "read_source"]


@dataclass
class Imported:
    """A converted model and what came with it."""

    model: VisionTransformer
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)


# What a registered name contributes to an import: the fields a file may not state (heads,
# pooling) and preprocessing. Not the numerics (LayerNorm eps, activation): those are the
# source's own (its file, config.json or its format's convention, e.g. MindSpore's eps 1e-7 and
# tanh GELU), and a preset's defaults must not overwrite them (issue 16: 7.5e-4 off otherwise).
_FROM_NAME = ("num_heads", "global_pool", "mean", "std", "crop_pct", "interpolation")
NUMERICS = ("norm_eps", "act")


def _known_from_name(model_name: str | None) -> dict[str, Any]:
    if not model_name:
        return {}
    from vitlab.registry import build_model

    with torch.device("meta"):
        cfg = build_model(model_name).config
    return {k: getattr(cfg, k) for k in _FROM_NAME}


def _hub_preprocess(path: Path, fmt: str) -> dict[str, Any]:
    """crop_pct / interpolation / crop_mode a timm hub folder's pretrained_cfg states ({} otherwise)."""
    if fmt != "timm" or not path.is_dir():
        return {}
    from vitlab.weights.convert_timm import file_facts

    pre = file_facts(path).get("pretrained_cfg") or {}
    out = {k: pre[k] for k in ("crop_pct", "interpolation", "crop_mode") if pre.get(k) is not None}
    if out.get("interpolation") not in (None, "bilinear", "bicubic", "nearest"):
        raise MappingError(f"{path}: pretrained_cfg interpolation {out['interpolation']!r} is not one vitlab applies "
                           "(bilinear, bicubic, nearest)")
    return out


def import_weights(path: str | Path, fmt: str | None = None, *, img_size: int | tuple[int, int] | None = None,
                   num_classes: int | None = None, model_name: str | None = None,
                   resample: str = "bicubic-aa", align_corners: bool = False, **known: Any) -> Imported:
    """Build a vitlab model holding the weights at ``path``.

    Args:
        fmt: source format (guessed from the path when None).
        img_size: run at this size; the position table is resampled (``resample``) when the
            weights were trained at another grid. Also disambiguates non-square grids.
        num_classes: a new head when it differs from the weights' (dropped keys are logged).
        model_name: a registered name whose heads, pooling and preprocessing apply (not its
            numerics: eps and activation are the source's, unless given in ``known``).
        known: further ViTConfig fields (``num_heads``, ``norm_eps``, ``mean`` ...); they win.
    """
    from vitlab.weights.pretrained_dir import WEIGHTS, is_vitlab_folder

    if fmt in (None, "vitlab") and is_vitlab_folder(Path(path)):  # a save_pretrained folder: its sealed checkpoint
        path, fmt = Path(path) / WEIGHTS, "vitlab"
    fmt = fmt or detect_format(path)
    hub_pre = _hub_preprocess(Path(path), fmt)
    known = {**_known_from_name(model_name), **{k: v for k, v in hub_pre.items() if k != "crop_mode"},
             **{k: v for k, v in known.items() if v is not None}}
    if img_size is not None:
        known["img_size"] = to_2tuple(img_size)
    cfg, state, names, info = read_source(path, fmt, **known)
    if "crop_mode" in hub_pre:
        info = {**info, "preprocess": {"crop_mode": hub_pre["crop_mode"]}}
    cfg, assumed = resolve_unstated(cfg, formats.FORMATS[fmt], known, info.get("stated", ()), str(path))
    model = build_vit(cfg).eval()
    load_into(model, state, str(path))
    model.model_name = model_name
    # source_config: the source's architecture as the file, the flags and (when said) a published
    # model give it; --verify builds the source's peer from it, never from vitlab's own guesses.
    info = {"source": str(path), "source_format": fmt, **info, "surgery": [], "source_config": cfg.to_dict()}
    if assumed:
        info["assumed"] = assumed
    if img_size is not None and to_2tuple(img_size) != model.patch_embed.img_size:
        info["surgery"].append(surgery.set_resolution(model, img_size, resample, align_corners))  # type: ignore[arg-type]
    if num_classes is not None and num_classes != model.num_classes:
        info["surgery"].append(surgery.change_num_classes(model, num_classes))
        names = []
    if len(names) != model.num_classes:
        names = _default_names(model.num_classes)
    from vitlab.weights.pretrained_cfg import from_import

    model.pretrained_cfg = from_import(info, model.config, model_name, names)  # e.g. an HF processor's squash
    return Imported(model, names, info)


def _default_names(n: int) -> list[str]:
    if n == 1000:
        from vitlab.weights.specs import imagenet1k_classes

        return imagenet1k_classes()
    return [str(i) for i in range(n)]


def export_weights(model: VisionTransformer, path: str | Path, fmt: str, class_names: list[str] | None = None,
                   info: dict[str, Any] | None = None) -> None:
    """Write ``model`` in the ``fmt`` layout at ``path`` (a folder for ``hf``).

    A target that cannot record the model's numerics (torchvision's fixed eps 1e-6 and exact GELU,
    MindSpore's 1e-7 and tanh GELU, a timm torch file) is refused with one line naming them.
    """
    target = formats.get_format(fmt, "target")
    check_numerics(model.config, fmt, Path(path))
    info = dict(info or {})
    if fmt == "vitlab" and getattr(model, "pretrained_cfg", None):  # kept with the weights (e.g. an HF squash)
        from vitlab.weights.pretrained_cfg import jsonable

        info["pretrained_cfg"] = jsonable(model.pretrained_cfg)
    target.from_vitlab(model, Path(path), list(class_names or _default_names(model.num_classes)), info)


# timm's .safetensors records the numerics in its metadata; a torch state dict (.pth / .bin) cannot,
# and timm builds a ViT with these unless told otherwise.
_TIMM_DEFAULT_NUMERICS = {"norm_eps": 1e-6, "act": "gelu"}


def check_numerics(cfg: Any, fmt: str, path: Path) -> None:
    """MappingError when ``fmt`` files at ``path`` would lose ``cfg``'s LayerNorm eps or activation."""
    fixed = formats.FORMATS[fmt].fixed_numerics
    where = f"{fmt} files"
    if fixed is None and fmt == "timm" and path.suffix.lower() != ".safetensors":
        fixed, where = _TIMM_DEFAULT_NUMERICS, f"timm {path.suffix or 'torch'} files (a bare state dict)"
    if not fixed:
        return
    lost = [f"{k}={getattr(cfg, k)!r} (the format has {v!r})" for k, v in fixed.items() if getattr(cfg, k) != v]
    if lost:
        hint = "; write timm .safetensors instead" if fmt == "timm" else ""
        raise MappingError(f"export to {fmt}: {where} cannot record {', '.join(lost)}: refusing to drop them{hint}")
