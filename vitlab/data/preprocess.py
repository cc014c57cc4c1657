"""Preprocessing in one call: ``create_transform(model)`` is the eval transform the weights were made with.

What the transform does comes from ``model.pretrained_cfg`` (the weights' own preprocessing: a
spec, a timm hub config, a Hugging Face image processor) or, without one, ``model.config``:

    resize ->  crop_mode "center": the shorter side to floor(size / crop_pct) (timm's eval
               transform; a non-square target keeps the aspect ratio as timm's ResizeKeepRatio);
               crop_mode "squash": both sides to floor(size / crop_pct) (Hugging Face's ViT
               image processor, crop_pct 1)
    crop   ->  the centre img_size
    tensor ->  float in [0, 1], then (x - mean) / std

crop_mode "vitlab" is the transform vitlab's trainer validated with
(:func:`vitlab.data.build_eval_transform`: an image already at the model's size is kept, tensors
are resized by torchvision); :func:`vitlab.api.load_checkpoint` gives it to checkpoints that
carry no pretrained_cfg (those trained by vitlab), so ``vitlab eval`` measures what training did.

Otherwise it is the same on every input: a PIL image is resized by PIL (what timm and transformers do, so
the pixels match theirs exactly); a uint8 tensor goes through PIL too; a float tensor through
torchvision's antialiased resize. Unlike :func:`vitlab.data.build_eval_transform`, an image
already at the model's size is still resized and cropped when crop_pct < 1, as timm does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from vitlab.data.image_ops import ToChannels
from vitlab.data.transforms import (INTERPOLATIONS, AugmentConfig, Preprocess, Transform, build_eval_transform,
                                   build_train_transform)
from vitlab.errors import ConfigError

CROP_MODES = ("center", "squash", "vitlab")


@dataclass(frozen=True)
class EvalPreprocess:
    """The fields of a pretrained_cfg the eval transform needs; ``img_size`` is (H, W)."""

    img_size: tuple[int, int]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    crop_mode: str
    interpolation: str

    def __post_init__(self) -> None:
        Preprocess(self.img_size, self.in_chans, self.mean, self.std, self.crop_pct, self.interpolation)  # type: ignore[arg-type]
        if self.crop_mode not in CROP_MODES:
            raise ConfigError(f"crop_mode {self.crop_mode!r}; expected one of {', '.join(CROP_MODES)}")


def resolve_preprocess(source: Any, **overrides: Any) -> EvalPreprocess:
    """The preprocessing of a model (its ``pretrained_cfg``, else its ``config``), a pretrained_cfg
    dict, or a config object; ``overrides`` (e.g. ``crop_pct=1.0``) win."""
    pcfg = getattr(source, "pretrained_cfg", None) if not isinstance(source, dict) else source
    if pcfg:
        c, h, w = pcfg["input_size"]
        fields = dict(img_size=(int(h), int(w)), in_chans=int(c), mean=tuple(pcfg["mean"]), std=tuple(pcfg["std"]),
                      crop_pct=float(pcfg["crop_pct"]), crop_mode=pcfg.get("crop_mode") or "center",
                      interpolation=pcfg["interpolation"])
    else:
        cfg = getattr(source, "config", source)
        if not hasattr(cfg, "crop_pct"):
            raise ConfigError(f"{type(source).__name__} states no preprocessing (no pretrained_cfg or config with crop_pct)")
        pre = Preprocess.from_config(cfg)
        fields = dict(img_size=pre.img_size, in_chans=pre.in_chans, mean=pre.mean, std=pre.std, crop_pct=pre.crop_pct,
                      crop_mode="center", interpolation=pre.interpolation)
    return EvalPreprocess(**{**fields, **overrides})  # type: ignore[arg-type]


def resize_size(pre: EvalPreprocess, height: int, width: int) -> list[int]:
    """(H, W) an image of ``height`` x ``width`` is resized to before the centre crop (timm's rule)."""
    scaled = [math.floor(s / pre.crop_pct) for s in pre.img_size]
    if pre.crop_mode == "squash":
        return scaled
    if scaled[0] == scaled[1]:  # shorter side to the size, the other by torchvision's int() rule
        s = scaled[0]
        return [s, int(s * width / height)] if height <= width else [int(s * height / width), s]
    ratio = min(height / scaled[0], width / scaled[1])  # timm ResizeKeepRatio (longest=0)
    return [round(height / ratio), round(width / ratio)]


class EvalTransform:
    """PIL image or tensor (C, H, W) -> normalised float tensor (in_chans, H, W); see the module docstring."""

    def __init__(self, pre: EvalPreprocess) -> None:
        self.pre = pre
        self.channels = ToChannels(pre.in_chans)
        self.mode = INTERPOLATIONS[pre.interpolation]
        self.mean, self.std = list(pre.mean), list(pre.std)

    def __call__(self, image: Any) -> torch.Tensor:
        if isinstance(image, Image.Image):
            image = image.convert("L" if self.pre.in_chans == 1 else "RGB")
        else:
            image = self.channels(image)
        h, w = (image.height, image.width) if isinstance(image, Image.Image) else tuple(image.shape[-2:])
        size = resize_size(self.pre, h, w)
        if [h, w] != size:  # a resize to the same size is the identity in PIL and torchvision alike
            if isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
                image = F.to_pil_image(image)  # PIL's filters, as timm and transformers use
            image = F.resize(image, size, interpolation=self.mode, antialias=True)
        image = F.center_crop(image, list(self.pre.img_size))
        if isinstance(image, Image.Image):
            image = F.pil_to_tensor(image)
        x = image.float().div(255) if image.dtype == torch.uint8 else image.float()
        return F.normalize(x, self.mean, self.std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pre})"


def create_transform(model: Any, train: bool = False, augment: AugmentConfig | None = None,
                     **overrides: Any) -> Transform:
    """The eval transform of ``model``'s weights (``train=False``), or its training transform.

    ``model`` may be a model, a ``pretrained_cfg`` dict or a config. ``train=True`` gives vitlab's
    training pipeline at the same size and normalisation with ``augment`` (default: none).
    """
    pre = resolve_preprocess(model, **overrides)
    base = Preprocess(pre.img_size, pre.in_chans, pre.mean, pre.std, pre.crop_pct, pre.interpolation)  # type: ignore[arg-type]
    if train:
        return build_train_transform(base, augment or AugmentConfig())
    return build_eval_transform(base) if pre.crop_mode == "vitlab" else EvalTransform(pre)
