"""Eval and train transforms: PIL image or uint8 tensor (C, H, W) -> normalised float (in_chans, H, W).

Built on ``torchvision.transforms.v2``; the steps that run on every image of a small dataset use the
faster equivalents in :mod:`vitlab.data.image_ops`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torchvision.transforms import v2

from vitlab.data.elastic import RandomElastic
from vitlab.data.image_ops import RandomAffine, RandomCropPad, RandomHFlip, ResizeCenterCrop, ToChannels, ToFloatNormalize
from vitlab.data.randaugment import ScaledRandAugment
from vitlab.errors import ConfigError

Interpolation = Literal["bilinear", "bicubic", "nearest"]
Transform = Callable[[Any], torch.Tensor]

# name -> torchvision resampling mode (also the eval transform of vitlab.data.preprocess)
INTERPOLATIONS = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class Preprocess:
    """What the model expects: input size (H, W), channels, normalisation, eval crop and resampling."""

    img_size: tuple[int, int]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    interpolation: Interpolation

    def __post_init__(self) -> None:
        if self.in_chans not in (1, 3):
            raise ConfigError(f"preprocessing supports in_chans 1 or 3, got {self.in_chans}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ConfigError(f"mean/std have {len(self.mean)}/{len(self.std)} entries for in_chans {self.in_chans}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation {self.interpolation!r}; expected one of {', '.join(INTERPOLATIONS)}")

    @classmethod
    def from_config(cls, cfg: Any) -> Preprocess:
        """From any object with these attribute names (e.g. ``vitlab.models.ViTConfig``)."""
        size = cfg.img_size
        return cls(
            img_size=(size, size) if isinstance(size, int) else (int(size[0]), int(size[1])),
            in_chans=int(cfg.in_chans),
            mean=tuple(float(m) for m in cfg.mean),
            std=tuple(float(s) for s in cfg.std),
            crop_pct=float(cfg.crop_pct),
            interpolation=cfg.interpolation,
        )


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation; the defaults switch everything off (train transform == eval transform)."""

    hflip: float = 0.0  # probability of a horizontal flip
    random_resized_crop: bool = False
    scale: tuple[float, float] = (0.08, 1.0)  # area range of RandomResizedCrop
    crop_padding: int = 0  # CIFAR-style shift: pad this many pixels, crop back to img_size at random
    crop_padding_mode: str = "constant"  # "constant" (zeros) or "reflect"
    affine_degrees: float = 0.0
    affine_translate: float = 0.0  # max shift as a fraction of width / height
    affine_scale: tuple[float, float] = (1.0, 1.0)
    elastic_alpha: float = 0.0  # elastic distortion (vitlab.data.elastic; torchvision's alpha): 0 = off
    elastic_sigma: float = 4.0  # its smoothness, in pixels
    randaugment: bool = False  # RandAugment (vitlab.data.randaugment): ra_num_ops ops at ra_magnitude / ra_levels
    ra_num_ops: int = 2
    ra_magnitude: float = 9  # out of ra_levels: torchvision's scale is 30, timm's (--aa rand-m9) 10
    ra_levels: int = 30
    ra_magnitude_std: float = 0.0  # per-op normal noise on the magnitude (timm's mstd)
    ra_prob: float = 1.0  # probability of applying each drawn op (timm: 0.5)
    color_jitter: float = 0.0  # brightness, contrast and saturation strength
    random_erasing: float = 0.0  # probability, applied to the normalised tensor

    def __post_init__(self) -> None:
        if isinstance(self.hflip, str) or isinstance(self.random_resized_crop, str):
            raise ConfigError("augment hflip / random_resized_crop are 'auto': resolve them first "
                              "(vitlab.config.resolve_auto_augment; the trainer does)")
        for name in ("hflip", "random_erasing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augment {name} is a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ConfigError(f"augment scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0.0 < self.affine_scale[0] <= self.affine_scale[1]:
            raise ConfigError(f"augment affine_scale must satisfy 0 < min <= max, got {self.affine_scale}")
        if self.affine_degrees < 0 or not 0.0 <= self.affine_translate <= 1.0 or self.color_jitter < 0:
            raise ConfigError("augment affine_degrees and color_jitter must be >= 0, affine_translate in [0, 1]")
        if self.elastic_alpha < 0 or self.elastic_sigma <= 0:
            raise ConfigError(f"augment elastic_alpha must be >= 0 and elastic_sigma > 0, got {self.elastic_alpha} / "
                              f"{self.elastic_sigma}")
        if self.crop_padding < 0 or self.crop_padding_mode not in ("constant", "reflect"):
            raise ConfigError(f"augment crop_padding must be >= 0 and crop_padding_mode 'constant' or 'reflect', "
                              f"got {self.crop_padding} / {self.crop_padding_mode!r}")
        if self.crop_padding and self.random_resized_crop:
            raise ConfigError("augment crop_padding and random_resized_crop are two crops; enable one")
        if self.ra_levels < 1 or not 0 <= self.ra_magnitude <= self.ra_levels:
            raise ConfigError(f"augment ra_magnitude must be in [0, ra_levels={self.ra_levels}], got {self.ra_magnitude}")
        if self.ra_num_ops < 0 or self.ra_magnitude_std < 0 or not 0 <= self.ra_prob <= 1:
            raise ConfigError(f"augment ra_num_ops and ra_magnitude_std must be >= 0, ra_prob in [0, 1], got "
                              f"{self.ra_num_ops}, {self.ra_magnitude_std}, {self.ra_prob}")

    @property
    def affine(self) -> bool:
        return self.affine_degrees > 0 or self.affine_translate > 0 or self.affine_scale != (1.0, 1.0)


def build_eval_transform(pre: Preprocess) -> Transform:
    """Channels -> resize + center-crop (skipped at exactly img_size) -> float -> normalise."""
    return v2.Compose([
        ToChannels(pre.in_chans),
        ResizeCenterCrop(pre.img_size, pre.crop_pct, INTERPOLATIONS[pre.interpolation]),
        ToFloatNormalize(pre.mean, pre.std),
    ])


def build_train_transform(pre: Preprocess, aug: AugmentConfig) -> Transform:
    """Eval's steps with the enabled augmentations in between; geometry first, colour on uint8, erasing last."""
    mode = INTERPOLATIONS[pre.interpolation]
    steps: list[Callable[[Any], Any]] = [ToChannels(pre.in_chans)]
    if aug.random_resized_crop:
        steps.append(v2.RandomResizedCrop(list(pre.img_size), scale=aug.scale, interpolation=mode, antialias=True))
    else:
        steps.append(ResizeCenterCrop(pre.img_size, pre.crop_pct, mode))
    if aug.crop_padding:
        steps.append(RandomCropPad(aug.crop_padding, aug.crop_padding_mode))
    if aug.affine:
        steps.append(RandomAffine(aug.affine_degrees, aug.affine_translate, aug.affine_scale))
    if aug.elastic_alpha > 0:
        steps.append(RandomElastic(aug.elastic_alpha, aug.elastic_sigma))
    if aug.hflip > 0:
        steps.append(RandomHFlip(aug.hflip))
    if aug.color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=aug.color_jitter, contrast=aug.color_jitter,
                                    saturation=aug.color_jitter))
    if aug.randaugment:
        # Its ops are defined on uint8 (posterize, solarize thresholds), so before ToDtype; its
        # rotations and shears on tensors support nearest and bilinear only.
        warp = v2.InterpolationMode.NEAREST if pre.interpolation == "nearest" else v2.InterpolationMode.BILINEAR
        steps.append(ScaledRandAugment(aug.ra_num_ops, aug.ra_magnitude, aug.ra_levels, aug.ra_magnitude_std,
                                       aug.ra_prob, interpolation=warp))
    steps.append(ToFloatNormalize(pre.mean, pre.std))
    if aug.random_erasing > 0:
        # value 0 on the normalised tensor = the dataset mean colour.
        steps.append(v2.RandomErasing(p=aug.random_erasing, value=0))
    return v2.Compose(steps)
