"""What every detection dataset provides: raw samples, class names and COCO-format ground truth."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

Transform = Callable[[Image.Image, dict[str, Any]], tuple[Any, dict[str, Any]]]


class DetectionDataset(Dataset, ABC):
    """Abstract base. Subclasses implement :meth:`load`, :meth:`image_id` and :meth:`coco_ground_truth`.

    ``dataset[i]`` is ``(image, target)`` after the transform; without one the image is PIL and
    the target holds xyxy pixel ``boxes``, ``labels`` (contiguous 0..K-1), ``area``, ``iscrowd``
    (training targets never include crowd regions), ``image_id`` and ``orig_size`` (H, W).
    """

    classes: list[str]
    transform: Transform | None = None
    skipped: dict[str, int]  # annotations left out of training targets, by reason

    @abstractmethod
    def load(self, index: int) -> tuple[Image.Image, dict[str, Any]]:
        """The raw PIL image and its target (before the transform)."""

    @abstractmethod
    def image_id(self, index: int) -> int:
        """The COCO image id of sample ``index``."""

    @abstractmethod
    def coco_ground_truth(self) -> dict[str, Any]:
        """COCO json dict (images, annotations, categories) with category ids = label + 1."""

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        image, target = self.load(index)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def make_target(boxes: torch.Tensor, labels: torch.Tensor, image_id: int, size: tuple[int, int],
                iscrowd: torch.Tensor | None = None, area: torch.Tensor | None = None) -> dict[str, Any]:
    if area is None:
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return {"boxes": boxes.float().reshape(-1, 4), "labels": labels.long(), "area": area.float(),
            "iscrowd": torch.zeros_like(labels) if iscrowd is None else iscrowd.long(),
            "image_id": image_id, "orig_size": torch.tensor(size)}
