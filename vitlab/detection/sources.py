"""Name -> detection dataset: ``shapes[:N[:SIZE]]`` (synthetic) or a COCO-layout folder."""

from __future__ import annotations

from vitlab.detection.base import DetectionDataset, Transform
from vitlab.detection.coco import CocoDetection, find_coco_split
from vitlab.detection.synthetic import ShapesDataset
from vitlab.errors import DataError

SHAPES_DEFAULT_IMAGES = {"train": 512, "val": 64}
SHAPES_SEEDS = {"train": 0, "val": 1_000_003}  # disjoint image streams per split


def open_detection_source(spec: str, split: str, transform: Transform | None = None) -> DetectionDataset:
    """Open ``spec`` for ``split`` ("train" or "val").

    ``shapes``: 512 train / 64 val synthetic 128x128 images; ``shapes:N`` N images; ``shapes:N:S``
    N images of side S. Anything else is a folder with COCO layout (``annotations/instances_<split>*.json``
    and ``<split>*/`` images), e.g. the tiny_coco set.
    """
    if spec == "shapes" or spec.startswith("shapes:"):
        parts = spec.split(":")[1:]
        try:
            n = int(parts[0]) if parts else SHAPES_DEFAULT_IMAGES[split]
            size = int(parts[1]) if len(parts) > 1 else 128
        except ValueError:
            raise DataError(f"{spec!r}: expected shapes, shapes:N or shapes:N:SIZE") from None
        if n < 1 or size < 32:
            raise DataError(f"{spec!r}: need at least 1 image of side >= 32")
        return ShapesDataset(n, size, seed=SHAPES_SEEDS[split], transform=transform)
    image_dir, ann_file = find_coco_split(spec, split)
    return CocoDetection(image_dir, ann_file, transform)
