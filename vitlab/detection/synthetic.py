"""Synthetic shapes: coloured rectangles and ellipses on noise, with exact boxes.

Every image is a pure function of (seed, index), so a set needs no files and a run is
reproducible. Small enough for tests and for a CPU demo that learns in minutes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from vitlab.detection.base import DetectionDataset, Transform, make_target

SHAPE_CLASSES = ["rectangle", "ellipse"]


def draw_shapes(rng: np.random.Generator, size: int, max_objects: int,
                min_frac: float = 0.15, max_frac: float = 0.45) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """One image: (PIL RGB size x size, boxes (M, 4) xyxy pixels, labels (M,)).

    Shapes may overlap a little; a new shape is re-drawn (up to 20 tries) if it would cover more
    than a third of an earlier one, so every object stays visible.
    """
    noise = rng.integers(0, 110, size=(size, size, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    draw = ImageDraw.Draw(image)
    n = int(rng.integers(1, max_objects + 1))
    boxes: list[list[float]] = []
    labels: list[int] = []
    for _ in range(n):
        for _try in range(20):
            w, h = (rng.uniform(min_frac, max_frac, size=2) * size).astype(int)
            x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            box = [x0, y0, x0 + w, y0 + h]
            if all(_overlap(box, b) < 1 / 3 for b in boxes):
                break
        else:
            continue
        label = int(rng.integers(0, len(SHAPE_CLASSES)))
        colour = tuple(int(c) for c in rng.integers(140, 256, size=3))
        # PIL includes the end pixel: draw to x1 - 1 so the box is exactly [x0, x1)
        (draw.rectangle if label == 0 else draw.ellipse)([x0, y0, x0 + w - 1, y0 + h - 1], fill=colour)
        boxes.append(box)
        labels.append(label)
    return image, np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(labels, dtype=np.int64)


def _overlap(a: list[float], b: list[float]) -> float:
    """Intersection over the area of ``b``."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / max((b[2] - b[0]) * (b[3] - b[1]), 1e-9)


class ShapesDataset(DetectionDataset):
    """``num_images`` synthetic images of side ``size`` with 1..``max_objects`` shapes each."""

    def __init__(self, num_images: int, size: int = 128, max_objects: int = 4, seed: int = 0,
                 transform: Transform | None = None) -> None:
        self.num_images, self.size, self.max_objects, self.seed = num_images, size, max_objects, seed
        self.classes = list(SHAPE_CLASSES)
        self.transform = transform
        self.skipped = {}

    def __len__(self) -> int:
        return self.num_images

    def _draw(self, index: int) -> tuple[Image.Image, np.ndarray, np.ndarray]:
        if not 0 <= index < self.num_images:
            raise IndexError(index)
        return draw_shapes(np.random.default_rng([self.seed, index]), self.size, self.max_objects)

    def image_id(self, index: int) -> int:
        return index + 1

    def load(self, index: int) -> tuple[Image.Image, dict[str, Any]]:
        image, boxes, labels = self._draw(index)
        return image, make_target(torch.from_numpy(boxes), torch.from_numpy(labels), index + 1, (self.size, self.size))

    def coco_ground_truth(self) -> dict[str, Any]:
        images, anns = [], []
        for i in range(self.num_images):
            _, boxes, labels = self._draw(i)
            images.append({"id": i + 1, "height": self.size, "width": self.size, "file_name": f"shape_{i:05d}.png"})
            for box, label in zip(boxes.tolist(), labels.tolist()):
                w, h = box[2] - box[0], box[3] - box[1]
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": label + 1,
                             "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
        cats = [{"id": i + 1, "name": n} for i, n in enumerate(self.classes)]
        return {"images": images, "annotations": anns, "categories": cats}
