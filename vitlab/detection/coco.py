"""COCO-format detection sets: an image folder plus an ``instances`` json.

Sparse COCO category ids (1..90 with gaps) become contiguous labels 0..K-1 in id order; the
class names are the categories' names. Crowd regions and degenerate boxes (zero or negative
size after clipping to the image) are left out of training targets and counted in ``skipped``;
the COCO ground truth used for mAP keeps crowd regions, as the official evaluation does.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vitlab.data.image_io import open_image
from vitlab.detection.base import DetectionDataset, Transform, make_target
from vitlab.errors import DataError


class CocoDetection(DetectionDataset):
    """Images under ``image_dir`` annotated by the COCO json ``ann_file``.

    Images are read through the guarded opener (:func:`vitlab.data.image_io.open_image`: allowed
    formats, ``max_pixels``, EXIF orientation, first frame, every mode to RGB).
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, transform: Transform | None = None,
                 max_pixels: int | None = None) -> None:
        self.image_dir, self.ann_file = Path(image_dir), Path(ann_file)
        self.transform, self.max_pixels = transform, max_pixels
        if not self.ann_file.is_file():
            raise DataError(f"{self.ann_file}: annotation file not found")
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: image folder not found")
        try:
            data = json.loads(self.ann_file.read_text())
            cats = sorted(data["categories"], key=lambda c: c["id"])
            self.images = list(data["images"])
            anns = data.get("annotations", [])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{self.ann_file}: not a COCO instances file ({err.__class__.__name__}: {err})") from None
        if not self.images:
            raise DataError(f"{self.ann_file}: no images")
        self.classes = [c["name"] for c in cats]
        self.cat_to_label = {c["id"]: i for i, c in enumerate(cats)}
        self.by_image: dict[int, list[dict]] = defaultdict(list)
        self.skipped = {"crowd": 0, "degenerate": 0, "unknown_category": 0}
        self._raw_anns = anns
        sizes = {im["id"]: (im["height"], im["width"]) for im in self.images}
        for a in anns:
            if a["category_id"] not in self.cat_to_label:
                self.skipped["unknown_category"] += 1
            elif a.get("iscrowd", 0):
                self.skipped["crowd"] += 1
            elif not _box_ok(a["bbox"], *sizes.get(a["image_id"], (0, 0))):
                self.skipped["degenerate"] += 1
            else:
                self.by_image[a["image_id"]].append(a)
        missing = [im["file_name"] for im in self.images if not (self.image_dir / im["file_name"]).is_file()]
        if missing:
            raise DataError(f"{self.image_dir}: {len(missing)} image(s) named in {self.ann_file.name} are missing, "
                            f"e.g. {missing[0]}")

    def __len__(self) -> int:
        return len(self.images)

    def image_id(self, index: int) -> int:
        return int(self.images[index]["id"])

    def load(self, index: int) -> tuple[Image.Image, dict[str, Any]]:
        info = self.images[index]
        path = self.image_dir / info["file_name"]
        image = open_image(path, self.max_pixels)
        h, w = image.height, image.width
        anns = self.by_image.get(info["id"], [])
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        labels = torch.tensor([self.cat_to_label[a["category_id"]] for a in anns], dtype=torch.int64)
        area = torch.tensor([float(a.get("area", 0.0)) for a in anns], dtype=torch.float32)
        return image, make_target(boxes, labels, int(info["id"]), (h, w), area=area)

    def coco_ground_truth(self) -> dict[str, Any]:
        anns = [{**a, "category_id": self.cat_to_label[a["category_id"]] + 1}
                for a in self._raw_anns if a["category_id"] in self.cat_to_label]
        anns = [{k: v for k, v in a.items() if k != "segmentation"} for a in anns]
        images = [{"id": im["id"], "height": im["height"], "width": im["width"], "file_name": im["file_name"]}
                  for im in self.images]
        cats = [{"id": i + 1, "name": n} for i, n in enumerate(self.classes)]
        return {"images": images, "annotations": anns, "categories": cats}


def _box_ok(bbox: list[float], h: int, w: int) -> bool:
    """A COCO [x, y, w, h] box that keeps a positive area inside the image."""
    try:
        x, y, bw, bh = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return False
    if not all(v == v and abs(v) != float("inf") for v in (x, y, bw, bh)):
        return False
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + bw, float(w)), min(y + bh, float(h))
    return x1 > x0 and y1 > y0


def find_coco_split(root: str | Path, split: str) -> tuple[Path, Path]:
    """(image folder, annotation json) of ``split`` under a COCO-layout ``root``:
    ``annotations/instances_<split>*.json`` and a folder ``<split>*`` (e.g. train2017)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    anns = sorted((root / "annotations").glob(f"instances_{split}*.json"))
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(split))
    if not anns:
        raise DataError(f"{root}: no annotations/instances_{split}*.json (expected COCO layout)")
    if not dirs:
        raise DataError(f"{root}: no image folder named {split}* (e.g. {split}2017)")
    return dirs[0], anns[0]
