"""The user-facing API, above the registry and the weights layer: build, load, save, convert.

>>> from vitlab.api import create_model, load_checkpoint
>>> model = create_model("vit_tiny_patch16_224", num_classes=10)
>>> model = create_model("vit_base_patch16_224", pretrained=True)           # its default checkpoint
>>> model = create_model("vit_base_patch16_224.tv_in1k")                    # a named one
>>> model = create_model("hf-hub:timm/vit_tiny_patch16_224.augreg_in21k")   # from the hub

Every model carries ``model.pretrained_cfg`` (a dict like timm's: source, license, where the
weights came from, preprocessing, classes; :mod:`vitlab.weights.pretrained_cfg`).
``save_weights`` writes a vitlab checkpoint; ``save_pretrained`` / ``from_pretrained`` a folder;
``import_weights`` / ``export_weights`` convert through the format table
(:mod:`vitlab.weights.formats`).

Importing this module imports :mod:`vitlab.models`, whose families register themselves in the
leaf :mod:`vitlab.registry`; so :func:`list_models` here always sees the built-in models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import vitlab.models  # noqa: F401  (runs the @register_model decorators of the built-in families)
from vitlab.errors import ConfigError
from vitlab.registry import build_model, get_builder, is_model, list_models, register_model
from vitlab.weights.api import Imported, export_weights, import_weights
from vitlab.weights.vitlab_format import Checkpoint, save_weights

__all__ = ["Checkpoint", "Imported", "create_model", "export_weights", "from_pretrained", "import_weights", "is_model",
           "list_models", "load_checkpoint", "register_model", "save_pretrained", "save_weights"]


def create_model(name: str, pretrained: bool | str | None = None, weights: str | Path | None = None,
                 **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` replace fields of its config.

    Args:
        name: a registered name, ``"name.TAG"`` (that checkpoint), or a hub id
            (``"hf-hub:org/name"`` or ``"org/name"``, ``@revision`` optional) of a timm or
            transformers repo, downloaded through ``huggingface_hub``.
        pretrained: ``True`` loads the model's default checkpoint (:func:`vitlab.weights.specs.default_tag`),
            a string the checkpoint ``name.TAG`` (downloaded into the cache with a hash check),
            ``False`` / None builds it untrained.
        weights: a local file or folder of any format :mod:`vitlab.weights` reads. Weights are
            converted to this model's size and classes; their own numerics (eps, activation) win
            over the preset's unless ``norm_eps`` / ``act`` are given here.

    Raises:
        UnknownModelError: the name is not registered (the message suggests close names).
        ConfigError: an override is unknown or invalid, or a tag is unknown / contradicts ``pretrained``.
        DownloadError: a download failed (offline: exit code 11).
    """
    if "/" in name:  # registry names have none: a hub id (imported only then: keeps create_model light)
        from vitlab.weights.hfhub import parse_hub_id

        hub = parse_hub_id(name)
        if hub is not None:
            return _from_hub(name, hub[0], hub[1], pretrained, weights, overrides)
    name, tag = name_and_tag(name, pretrained)
    if tag is None and weights is None:
        model = build_model(name, **overrides)
        _describe_untrained(model, name)
        return model
    from vitlab.weights import hub as weights_hub  # only when weights are asked for: keeps `import vitlab` light

    if tag is not None:
        if weights is not None:
            raise ConfigError(f"{name}: give a pretrained tag ({tag!r}) or weights=FILE, not both")
        overrides = {**weights_hub.pretrained_overrides(name, tag), **overrides}
    model = build_model(name, **overrides)
    numerics = {k: overrides[k] for k in ("norm_eps", "act") if k in overrides}
    weights_hub.load_weights_into(model, name, pretrained=tag, weights=weights, numerics=numerics)
    return model


def name_and_tag(name: str, pretrained: bool | str | None) -> tuple[str, str | None]:
    """(registered name, tag or None) from ``name`` / ``"name.tag"`` and ``pretrained``."""
    from vitlab.weights.specs import default_tag

    named_tag = None
    if not is_model(name) and "." in name and is_model(name.rsplit(".", 1)[0]):
        name, named_tag = name.rsplit(".", 1)
    get_builder(name)  # an unknown name fails here, with suggestions, before any spec lookup
    if pretrained is False or (pretrained is None and named_tag is None):
        return name, None
    if isinstance(pretrained, str) and named_tag is not None and pretrained != named_tag:
        raise ConfigError(f"{name}.{named_tag} names tag {named_tag!r} but pretrained={pretrained!r}; give one")
    if isinstance(pretrained, str):
        return name, pretrained
    return name, named_tag or default_tag(name)


def _describe_untrained(model: nn.Module, name: str) -> None:
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "crop_pct"):  # image models with preprocessing (not DETR)
        from vitlab.weights.pretrained_cfg import from_config

        model.pretrained_cfg = from_config(cfg, name)


def _from_hub(name: str, repo: str, revision: str | None, pretrained: bool | str | None,
              weights: str | Path | None, overrides: dict[str, Any]) -> nn.Module:
    """A timm / transformers / vitlab repo on the hub, downloaded through huggingface_hub."""
    if pretrained is False or isinstance(pretrained, str) or weights is not None:
        raise ConfigError(f"{name}: a hub id names its weights; pass a registered name for an untrained model or "
                          "another checkpoint")
    return from_hub(repo, revision, **overrides)


def from_hub(repo: str, revision: str | None = None, cache_dir: str | Path | None = None,
             **overrides: Any) -> nn.Module:
    """A model from a hub repo (timm, transformers or vitlab's own folder) via huggingface_hub."""
    from vitlab.weights.hfhub import hub_folder

    model = from_pretrained(hub_folder(repo, revision, cache_dir), **overrides)
    model.pretrained_cfg = {**model.pretrained_cfg, "hf_hub_id": repo, "revision": revision, "file": None}
    return model


def from_pretrained(path: str | Path, device: str | torch.device = "cpu", **overrides: Any) -> nn.Module:
    """A model from a folder (:func:`save_pretrained`'s, a timm hub folder, a transformers folder) or a hub id.

    vitlab folders rebuild exactly (``overrides`` not allowed); timm / transformers folders are
    converted, with ``img_size`` / ``num_classes`` in ``overrides`` applied as surgery.
    """
    from vitlab.weights import pretrained_cfg as pcfg
    from vitlab.weights.hfhub import hub_folder, parse_hub_id
    from vitlab.weights.pretrained_dir import is_vitlab_folder, load_folder

    folder = Path(path)
    hub = None if folder.is_dir() else parse_hub_id(str(path))
    if hub is not None:
        folder = hub_folder(*hub)
    if is_vitlab_folder(folder):
        if overrides:
            raise ConfigError(f"{folder}: a vitlab folder rebuilds as saved; change {', '.join(overrides)} afterwards")
        return load_folder(folder, str(device))
    extra = set(overrides) - {"img_size", "num_classes"}
    if extra:
        raise ConfigError(f"{folder}: only img_size and num_classes apply to converted weights, not {', '.join(sorted(extra))}")
    imp = import_weights(folder, img_size=overrides.get("img_size"), num_classes=overrides.get("num_classes"))
    model = imp.model.to(device).eval()
    model.class_names = imp.class_names
    model.weights_info = imp.info
    model.pretrained_cfg = pcfg.from_import(imp.info, model.config, getattr(model, "model_name", None),
                                            imp.class_names)
    return model


def save_pretrained(model: nn.Module, folder: str | Path, class_names: list[str] | None = None) -> Path:
    """Write ``model`` as a folder (model.safetensors + config.json with its config and pretrained_cfg)."""
    from vitlab.weights.pretrained_dir import save_pretrained as save

    return save(model, folder, class_names)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model stored in a vitlab checkpoint (in eval mode) with its class names and info.

    ``ckpt.model.pretrained_cfg`` is the one stored with it, else derived from its config with
    crop_mode "vitlab" (the eval transform vitlab's trainer used: :mod:`vitlab.data.preprocess`).
    """
    from vitlab.weights.rebuild import load_checkpoint as rebuild  # imports every family (DETR: torchvision)

    ckpt = rebuild(path, device)
    stored = ckpt.info.get("pretrained_cfg") if isinstance(ckpt.info, dict) else None
    if stored:
        from vitlab.weights.pretrained_cfg import from_json

        ckpt.model.pretrained_cfg = from_json(stored)
    else:  # trained by vitlab (or written before pretrained_cfg): the transform its training validated with
        _describe_untrained(ckpt.model, getattr(ckpt.model, "model_name", None) or "")
        if getattr(ckpt.model, "pretrained_cfg", None) is not None:
            ckpt.model.pretrained_cfg.update(source="vitlab", crop_mode="vitlab")
    return ckpt
