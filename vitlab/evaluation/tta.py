"""Test-time augmentation: a classifier's logits averaged over deterministic views of each image.

* ``hflip``: the image and its mirror image (left-right), the standard view for natural photos,
  whose classes do not change in a mirror (CIFAR, ImageNet). Wrong where they do (digits, text).
* ``shift``: the image and two copies moved by one pixel, down-right and up-left (the edge row and
  column repeated into the gap, so no fill value has to be guessed on a normalised tensor). For
  data whose class survives a small translation, digits included; three views, so three times the
  cost of a plain evaluation (two diagonal copies rather than four axis-aligned ones keep it there).
* ``hflip_shift``: both of the above for photos: the image and its mirror, each also moved one
  pixel down-right and up-left (six views, six times the cost). Chosen for the CIFAR recipe on val
  (benchmarks/cifar10_notes.md): training crops move the image by up to 4 pixels, so small moves
  are views the model has seen.

Each view is one call at the batch's own size, so a runtime compiled for a fixed batch (ONNX,
OpenVINO) runs it unchanged. Logits, not probabilities, are averaged so the result is still a
logit vector for the losses and calibration figures computed from it. Off unless asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vitlab.errors import ConfigError

if TYPE_CHECKING:
    import torch

TTA_MODES = ("none", "hflip", "shift", "hflip_shift")
# the modes in one line, for every --tta's help
MODES_HELP = ("hflip averages each image's logits with its mirror's (photos); shift with two copies moved one "
              "pixel diagonally (digits too); hflip_shift both (six views, photos)")


def check_tta(mode: str, where: str) -> str:
    """``mode`` if known, else a one-line ConfigError naming ``where`` (the flag or key)."""
    if mode not in TTA_MODES:
        raise ConfigError(f"{where} {mode!r}: choose one of {', '.join(TTA_MODES)}")
    return mode


def _shifted(images: torch.Tensor, step: int) -> torch.Tensor:
    """``images`` (B, C, H, W) moved ``step`` (+1 or -1) pixels along both axes, edges repeated."""
    from torch.nn.functional import pad

    h, w = images.shape[-2:]
    padded = pad(images, (1, 1, 1, 1), mode="replicate")
    top = 1 - step  # +1: the content moves down-right, so the window starts above and left of it
    return padded[..., top:top + h, top:top + w]


def tta_views(images: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a batch (B, C, H, W) that ``mode`` averages over, the batch itself first."""
    mode = check_tta(mode, "tta")
    if mode == "hflip":
        return [images, images.flip(-1)]
    if mode == "shift":
        return [images, _shifted(images, 1), _shifted(images, -1)]
    if mode == "hflip_shift":
        mirror = images.flip(-1)
        return [images, mirror, _shifted(images, 1), _shifted(images, -1), _shifted(mirror, 1), _shifted(mirror, -1)]
    return [images]


def tta_logits(classify: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mode: str) -> torch.Tensor:
    """Mean logits (B, K) of ``classify`` over the views of ``images`` (B, C, H, W), in float32."""
    views = tta_views(images, mode)
    if len(views) == 1:
        return classify(images)
    total = classify(views[0]).float()
    for view in views[1:]:
        total = total + classify(view).float()
    return total / len(views)
