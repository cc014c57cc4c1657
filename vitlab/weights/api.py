"""One entry point per direction: :func:`import_weights` (any source -> vitlab model) and
:func:`export_weights` (vitlab model -> any target layout), plus :func:`detect_format`.

Sources: ``vitlab`` (self-describing safetensors), ``timm`` (.pth / .bin / .safetensors),
``hf`` (a folder), ``torchvision`` (.pth), ``npz`` (Google JAX / big_vision), ``mindspore``
(.ckpt). Targets: ``vitlab``, ``timm``, ``hf``, ``torchvision``, ``mindspore``. ONNX and
torch.export live in :mod:`vitlab.weights.export`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitlab.layers import to_2tuple
from vitlab.models.vit import VisionTransformer, build_vit
from vitlab.models.vit_config import ViTConfig
import vitlab.weights.surgery as surgery
from vitlab.weights.errors import MalformedFileError, MappingError
from vitlab.weights.keymap import load_into

IMPORT_FORMATS = ("vitlab", "timm", "hf", "torchvision", "npz", "mindspore")
EXPORT_FORMATS = ("vitlab", "timm", "hf", "torchvision", "mindspore")


@dataclass
class Imported:
    """A converted model and what came with it."""

    model: VisionTransformer
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def detect_format(path: str | Path) -> str:
    """Guess the source format from the path (folder, suffix, leading bytes)."""
    path = Path(path)
    if path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix == ".ckpt":
        return "mindspore"
    if suffix == ".safetensors":
        from vitlab.weights.io import validate_safetensors_header

        _, meta = validate_safetensors_header(path)
        return "vitlab" if meta.get("format") == "vitlab" else "timm"
    if suffix in (".pth", ".pt", ".bin"):
        return "timm"
    raise MalformedFileError(f"{path}: cannot tell the format from the name; pass --from")


def _known_from_name(model_name: str | None) -> dict[str, Any]:
    if not model_name:
        return {}
    from vitlab.registry import build_model

    with torch.device("meta"):
        cfg = build_model(model_name).config
    return {k: getattr(cfg, k) for k in ("num_heads", "norm_eps", "act", "mean", "std", "crop_pct", "interpolation")}


def read_source(path: str | Path, fmt: str, **known: Any) -> tuple[ViTConfig, dict[str, torch.Tensor], list[str], dict[str, Any]]:
    """(config at the weights' native size, vitlab-named state, class names, info) for any source."""
    path = Path(path)
    src = str(path)
    if fmt == "vitlab":
        from vitlab.weights.vitlab_format import read_metadata
        from vitlab.weights.io import read_safetensors

        meta = read_metadata(path)
        cfg = ViTConfig.from_dict(meta["model"]["config"])
        return cfg, read_safetensors(path)[0], meta["class_names"], {"source_info": meta["info"]}
    if fmt in ("timm", "torchvision"):
        from vitlab.weights.io import read_safetensors, read_torch

        theirs = read_safetensors(path)[0] if path.suffix == ".safetensors" else read_torch(path)
        if fmt == "timm" and "patch_embed.backbone.stem.conv.weight" in theirs:  # ResNet-ViT hybrid
            from vitlab.weights.convert_timm_hybrid import import_state as import_hybrid

            cfg, state = import_hybrid(theirs, src, **known)
            return cfg, state, [], {}
        if fmt == "timm":
            from vitlab.weights.convert_timm import import_state
        else:
            from vitlab.weights.convert_torchvision import import_state
        cfg, state = import_state(theirs, src, **known)
        return cfg, state, [], {}
    if fmt == "hf":
        from vitlab.weights.convert_hf import import_state, read_folder

        theirs, config, pre = read_folder(path)
        cfg, state, names = import_state(theirs, config, pre, src, **known)
        return cfg, state, names, {}
    if fmt == "npz":
        from vitlab.weights.convert_npz import import_state
        from vitlab.weights.io import read_npz

        cfg, state = import_state(read_npz(path), src, **known)
        return cfg, state, [], {}
    if fmt == "mindspore":
        from vitlab.weights.convert_mindspore import import_state
        from vitlab.weights.mindspore_ckpt import read_ckpt

        cfg, state, ignored = import_state(read_ckpt(path), src, **known)
        return cfg, state, [], {"ignored_keys": ignored}
    raise MappingError(f"unknown source format {fmt!r}; choose from {', '.join(IMPORT_FORMATS)}")


def import_weights(path: str | Path, fmt: str | None = None, *, img_size: int | tuple[int, int] | None = None,
                   num_classes: int | None = None, model_name: str | None = None,
                   resample: str = "bicubic-aa", align_corners: bool = False, **known: Any) -> Imported:
    """Build a vitlab model holding the weights at ``path``.

    Args:
        fmt: source format (guessed from the path when None).
        img_size: run at this size; the position table is resampled (``resample``) when the
            weights were trained at another grid. Also disambiguates non-square grids.
        num_classes: a new head when it differs from the weights' (dropped keys are logged).
        model_name: a registered name whose numerics (heads, eps, preprocessing) apply.
        known: further ViTConfig fields (``num_heads``, ``norm_eps``, ``mean`` ...).
    """
    fmt = fmt or detect_format(path)
    known = {**_known_from_name(model_name), **{k: v for k, v in known.items() if v is not None}}
    if img_size is not None:
        known["img_size"] = to_2tuple(img_size)
    cfg, state, names, info = read_source(path, fmt, **known) if fmt != "vitlab" else read_source(path, fmt)
    model = build_vit(cfg).eval()
    load_into(model, state, str(path))
    model.model_name = model_name
    info = {"source": str(path), "source_format": fmt, **info, "surgery": []}
    if fmt in ("timm", "torchvision", "mindspore") and "num_heads" not in known:
        info["guessed"] = {"num_heads": cfg.num_heads}  # these files do not record the heads
    if img_size is not None and to_2tuple(img_size) != model.patch_embed.img_size:
        info["surgery"].append(surgery.set_resolution(model, img_size, resample, align_corners))  # type: ignore[arg-type]
    if num_classes is not None and num_classes != model.num_classes:
        info["surgery"].append(surgery.change_num_classes(model, num_classes))
        names = []
    if len(names) != model.num_classes:
        names = _default_names(model.num_classes)
    return Imported(model, names, info)


def _default_names(n: int) -> list[str]:
    if n == 1000:
        from vitlab.weights.specs import imagenet1k_classes

        return imagenet1k_classes()
    return [str(i) for i in range(n)]


def export_weights(model: VisionTransformer, path: str | Path, fmt: str, class_names: list[str] | None = None,
                   info: dict[str, Any] | None = None) -> None:
    """Write ``model`` in the ``fmt`` layout at ``path`` (a folder for ``hf``)."""
    from vitlab.weights.io import write_safetensors, write_torch

    class_names = list(class_names or _default_names(model.num_classes))
    path = Path(path)
    if fmt == "vitlab":
        from vitlab.weights.vitlab_format import save_weights

        save_weights(path, model, class_names, info=_jsonable(info or {}))
    elif fmt == "timm":
        from vitlab.weights.convert_timm import export_state, timm_kwargs

        if model.config.stem == "resnetv2":
            from vitlab.weights.convert_timm_hybrid import export_state as export_hybrid

            state = export_hybrid(model)
        else:
            state = export_state(model)
        if path.suffix == ".safetensors":
            write_safetensors(path, state, {"format": "pt", "timm_kwargs": json.dumps(timm_kwargs(model.config)),
                                            "architecture": str(getattr(model, "model_name", "") or "")})
        else:
            write_torch(path, state)
    elif fmt == "hf":
        from vitlab.weights.convert_hf import write_folder

        write_folder(model, path, class_names)
    elif fmt == "torchvision":
        from vitlab.weights.convert_torchvision import export_state

        write_torch(path, export_state(model))
    elif fmt == "mindspore":
        from vitlab.weights.convert_mindspore import export_state
        from vitlab.weights.mindspore_ckpt import write_ckpt

        write_ckpt(path, export_state(model))
    else:
        raise MappingError(f"unknown target format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
