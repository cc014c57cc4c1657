"""``model.pretrained_cfg``: what a model's weights are and how their images were prepared, like timm's.

A plain dict (timm's keys where timm has one): ``architecture``, ``tag``, ``source`` (the format
the weights came from, or ``"untrained"``), ``url`` / ``hf_hub_id`` / ``file``, ``license``,
``label_set``, ``input_size`` (C, H, W), ``mean``, ``std``, ``crop_pct``, ``crop_mode``
(``"center"``: shorter side to size / crop_pct, then a centre crop, as timm; ``"squash"``: both
sides to size / crop_pct, as Hugging Face's ViT image processor; ``"vitlab"``: vitlab's own
training-time eval transform, which keeps an image already at the model's size, for
checkpoints trained by vitlab), ``interpolation``,
``num_classes`` and ``label_names`` when the classes are known. The preprocessing fields are what
:func:`vitlab.data.create_transform` builds the eval transform from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vitlab.errors import ConfigError
from vitlab.weights.specs import WeightSpec

CROP_MODES = ("center", "squash", "vitlab")
PREPROCESS_KEYS = ("input_size", "mean", "std", "crop_pct", "crop_mode", "interpolation")


def from_config(cfg: Any, architecture: str | None = None, **fields: Any) -> dict[str, Any]:
    """A pretrained_cfg holding ``cfg``'s preprocessing (a ViTConfig or any object with its names)."""
    h, w = (cfg.img_size, cfg.img_size) if isinstance(cfg.img_size, int) else cfg.img_size
    out: dict[str, Any] = {
        "architecture": architecture, "tag": None, "source": "untrained", "license": None,
        "input_size": (int(cfg.in_chans), int(h), int(w)), "mean": tuple(cfg.mean), "std": tuple(cfg.std),
        "crop_pct": float(cfg.crop_pct), "crop_mode": "center", "interpolation": cfg.interpolation,
        "num_classes": int(getattr(cfg, "num_classes", 0)),
    }
    out.update(fields)
    check(out)
    return out


def from_spec(spec: WeightSpec, cfg: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The pretrained_cfg of a spec-table checkpoint loaded into a model of config ``cfg``."""
    where: dict[str, Any] = {"url": spec.url}
    if spec.url.startswith("hf://"):
        repo, file = spec.url[len("hf://"):].rsplit("/", 1)
        where = {"hf_hub_id": repo, "file": file}
    return from_config(cfg, spec.model, tag=spec.tag, source=spec.fmt, license=spec.license,
                       label_set=spec.label_set, **where, **_names(class_names, cfg))


def from_import(info: Mapping[str, Any], cfg: Any, architecture: str | None,
                class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The pretrained_cfg of weights read from a file or folder (``info`` of an import)."""
    stated = dict(info.get("preprocess") or {})  # what the source itself says (HF processor, timm hub cfg)
    fields = {k: stated[k] for k in ("crop_mode",) if k in stated}
    return from_config(cfg, architecture, source=info.get("source_format"), file=info.get("source"),
                       **{k: v for k, v in info.items() if k in ("hf_hub_id", "revision")}, **fields,
                       **_names(class_names, cfg))


def _names(class_names: Sequence[str] | None, cfg: Any) -> dict[str, Any]:
    names = list(class_names or [])
    return {"label_names": names} if names and len(names) == int(getattr(cfg, "num_classes", 0)) else {}


def check(pcfg: Mapping[str, Any]) -> None:
    """ConfigError on a preprocessing field vitlab cannot apply."""
    if pcfg.get("crop_mode", "center") not in CROP_MODES:
        raise ConfigError(f"pretrained_cfg crop_mode {pcfg.get('crop_mode')!r}; vitlab applies {' or '.join(CROP_MODES)}")
    if not 0.0 < float(pcfg.get("crop_pct", 1.0)) <= 1.0:
        raise ConfigError(f"pretrained_cfg crop_pct must be in (0, 1], got {pcfg.get('crop_pct')}")


def jsonable(pcfg: Mapping[str, Any]) -> dict[str, Any]:
    """Tuples as lists: the form stored in checkpoints and config.json."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in pcfg.items()}


def from_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """The stored form back: ``input_size``, ``mean`` and ``std`` as tuples."""
    return {k: tuple(v) if k in ("input_size", "mean", "std") and isinstance(v, list) else v for k, v in data.items()}
