"""Joint image + box transforms for detection (the authors' recipe, written as small classes).

A transform takes and returns ``(image, target)``: a PIL image and a dict whose ``boxes`` are
(M, 4) xyxy **pixels** (plus ``labels``, ``area``, ``iscrowd`` of the same length). The last
step, :class:`ToTensorNormalize`, turns the image into a normalised (3, H, W) tensor and the boxes
into cxcywh normalised by the (unpadded) image size, which is what DETR predicts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
import torchvision.transforms.functional as TF
from PIL import Image

from vitlab.models.detr.box_ops import box_xyxy_to_cxcywh

Target = dict[str, Any]
_PER_BOX = ("boxes", "labels", "area", "iscrowd")


def _select(target: Target, keep: torch.Tensor) -> Target:
    return {k: (v[keep] if k in _PER_BOX else v) for k, v in target.items()}


class Compose:
    def __init__(self, transforms: Sequence[Any]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Image.Image, target: Target) -> tuple[Any, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
        if random.random() >= self.p:
            return image, target
        w = image.width
        boxes = target["boxes"]
        flipped = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
        return TF.hflip(image), {**target, "boxes": flipped}


def resized_shape(h: int, w: int, size: int, max_size: int | None) -> tuple[int, int]:
    """(h, w) with the shorter side ``size``, shrunk so the longer side is at most ``max_size``."""
    short, long = min(h, w), max(h, w)
    if max_size is not None and long * size > max_size * short:
        size = max(1, max_size * short // long)  # floor: the longer side must not pass max_size
    new_long = int(size * long / short)
    if max_size is not None:
        new_long = min(new_long, max_size)
    return (new_long, size) if h > w else (size, new_long)


class RandomResize:
    """Resize so the shorter side is a random choice of ``sizes`` (longer side <= ``max_size``)."""

    def __init__(self, sizes: Sequence[int], max_size: int | None = None) -> None:
        self.sizes = list(sizes)
        self.max_size = max_size

    def __call__(self, image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
        size = random.choice(self.sizes)
        h, w = resized_shape(image.height, image.width, size, self.max_size)
        sx, sy = w / image.width, h / image.height
        out = {**target, "boxes": target["boxes"] * torch.tensor([sx, sy, sx, sy])}
        if "area" in target:
            out["area"] = target["area"] * (sx * sy)
        return image.resize((w, h), Image.BILINEAR), out


class RandomSizeCrop:
    """Crop a random window with sides in [min_size, max_size] (and within the image).

    Boxes are clipped to the window; boxes left with no area are dropped.
    """

    def __init__(self, min_size: int, max_size: int) -> None:
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, image: Image.Image, target: Target) -> tuple[Image.Image, Target]:
        w = random.randint(min(image.width, self.min_size), min(image.width, self.max_size))
        h = random.randint(min(image.height, self.min_size), min(image.height, self.max_size))
        top, left = random.randint(0, image.height - h), random.randint(0, image.width - w)
        boxes = target["boxes"] - torch.tensor([left, top, left, top], dtype=target["boxes"].dtype)
        boxes = torch.min(boxes.view(-1, 2, 2), torch.tensor([w, h], dtype=boxes.dtype)).clamp(min=0)
        keep = (boxes[:, 1] > boxes[:, 0]).all(1)
        area = (boxes[:, 1] - boxes[:, 0]).prod(1)
        out = _select({**target, "boxes": boxes.view(-1, 4), "area": area}, keep)
        return image.crop((left, top, left + w, top + h)), out


class RandomSelect:
    """Apply ``first`` with probability ``p``, else ``second``."""

    def __init__(self, first: Any, second: Any, p: float = 0.5) -> None:
        self.first, self.second, self.p = first, second, p

    def __call__(self, image: Image.Image, target: Target) -> tuple[Any, Target]:
        return self.first(image, target) if random.random() < self.p else self.second(image, target)


class ToTensorNormalize:
    """PIL -> normalised float (3, H, W); boxes -> normalised cxcywh; records ``size`` (H, W)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = list(mean), list(std)

    def __call__(self, image: Image.Image, target: Target) -> tuple[torch.Tensor, Target]:
        x = TF.normalize(TF.to_tensor(image.convert("RGB")), self.mean, self.std)
        h, w = x.shape[-2:]
        boxes = box_xyxy_to_cxcywh(target["boxes"]) / torch.tensor([w, h, w, h], dtype=torch.float32)
        return x, {**target, "boxes": boxes.float(), "size": torch.tensor([h, w])}


def build_train_transform(mean: Sequence[float], std: Sequence[float], scales: Sequence[int], max_size: int,
                          hflip: float = 0.5, crop: bool = True, crop_prescales: Sequence[int] = (400, 500, 600),
                          crop_size: tuple[int, int] = (384, 600)) -> Compose:
    """The paper's augmentation: flip; then either a multi-scale resize, or resize-crop-resize."""
    resize = RandomResize(scales, max_size)
    steps: list[Any] = [RandomHorizontalFlip(hflip)] if hflip > 0 else []
    if crop:
        steps.append(RandomSelect(resize, Compose([RandomResize(crop_prescales), RandomSizeCrop(*crop_size),
                                                   RandomResize(scales, max_size)])))
    else:
        steps.append(resize)
    return Compose([*steps, ToTensorNormalize(mean, std)])


def build_eval_transform(mean: Sequence[float], std: Sequence[float], min_size: int, max_size: int) -> Compose:
    """Resize the shorter side to ``min_size`` (longer side capped at ``max_size``), normalise."""
    return Compose([RandomResize([min_size], max_size), ToTensorNormalize(mean, std)])
