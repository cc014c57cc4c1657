"""Test-time augmentation: a classifier's logits averaged over deterministic views of each image.

``hflip`` averages the logits of the image and of its mirror image (left-right), the standard
view for natural photos, whose classes do not change in a mirror (CIFAR, ImageNet). It is wrong for
data where they do (digits, text): it is off unless asked for. Each view is one call at the batch's
own size, so a runtime compiled for a fixed batch (ONNX, OpenVINO) runs it unchanged.

Logits, not probabilities, are averaged so the result is still a logit vector for the losses and
calibration figures computed from it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vitlab.errors import ConfigError

TTA_MODES = ("none", "hflip")


def check_tta(mode: str, where: str) -> str:
    """``mode`` if known, else a one-line ConfigError naming ``where`` (the flag or key)."""
    if mode not in TTA_MODES:
        raise ConfigError(f"{where} {mode!r}: choose one of {', '.join(TTA_MODES)}")
    return mode


def tta_views(images: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a batch (B, C, H, W) that ``mode`` averages over, the batch itself first."""
    if check_tta(mode, "tta") == "hflip":
        return [images, images.flip(-1)]
    return [images]


def tta_logits(classify: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mode: str) -> torch.Tensor:
    """Mean logits (B, K) of ``classify`` over the views of ``images`` (B, C, H, W), in float32."""
    views = tta_views(images, mode)
    if len(views) == 1:
        return classify(images)
    return torch.stack([classify(v).float() for v in views]).mean(0)
