"""Detection data: synthetic shapes, joint transforms, padded batches, COCO json, COCO mAP."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitlab.detection.coco import CocoDetection, find_coco_split
from vitlab.detection.coco_eval import coco_map
from vitlab.detection.collate import collate_detection, pad_images
from vitlab.detection.sources import open_detection_source
from vitlab.detection.synthetic import ShapesDataset
from vitlab.detection.transforms import (RandomHorizontalFlip, RandomResize, RandomSizeCrop, ToTensorNormalize,
                                         build_train_transform, resized_shape)
from vitlab.errors import DataError
from vitlab.models.detr.box_ops import box_cxcywh_to_xyxy

TINY_COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "tiny_coco"
needs_tiny_coco = pytest.mark.skipif(not TINY_COCO.is_dir(), reason="../shared/data/tiny_coco not present")


def test_shapes_are_deterministic_and_boxes_fit_the_shapes() -> None:
    ds = ShapesDataset(6, 96, seed=3)
    a, b = ds.load(2), ds.load(2)
    assert a[0].tobytes() == b[0].tobytes() and torch.equal(a[1]["boxes"], b[1]["boxes"])
    for i in range(len(ds)):
        image, t = ds.load(i)
        px = torch.from_numpy(np.array(image)).int()
        assert len(t["boxes"]) >= 1 and set(t["labels"].tolist()) <= {0, 1}
        for (x0, y0, x1, y1), label in zip(t["boxes"].int().tolist(), t["labels"].tolist()):
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
            if label == 0:  # rectangles are filled exactly up to the box edge, with bright colours (>= 140)
                assert (px[y0, x0] >= 140).any() and (px[y1 - 1, x1 - 1] >= 140).any()
    gt = ds.coco_ground_truth()
    assert len(gt["images"]) == 6 and len(gt["annotations"]) == sum(len(ds.load(i)[1]["boxes"]) for i in range(6))


def _target(boxes: list[list[float]]) -> dict:
    b = torch.tensor(boxes, dtype=torch.float32)
    return {"boxes": b, "labels": torch.arange(len(b)), "area": (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]),
            "iscrowd": torch.zeros(len(b), dtype=torch.int64)}


def test_flip_twice_is_identity_and_resize_scales_boxes() -> None:
    image = Image.new("RGB", (100, 50))
    t = _target([[10, 5, 30, 25], [0, 0, 100, 50]])
    flip = RandomHorizontalFlip(1.0)
    im1, t1 = flip(image, t)
    assert t1["boxes"][0].tolist() == [70, 5, 90, 25]
    _, t2 = flip(im1, t1)
    assert torch.equal(t2["boxes"], t["boxes"])
    im3, t3 = RandomResize([25])(image, t)
    assert im3.size == (50, 25) and t3["boxes"][1].tolist() == [0, 0, 50, 25]
    assert t3["area"][1].item() == pytest.approx(50 * 25)
    assert resized_shape(480, 640, 800, 1333) == (800, 1066)
    for h, w in [(100, 300), (427, 640), (640, 213), (333, 1000)]:
        nh, nw = resized_shape(h, w, 128, 128)
        assert max(nh, nw) <= 128


def test_crop_clips_and_drops_boxes() -> None:
    random.seed(0)
    image = Image.new("RGB", (200, 200))
    t = _target([[10, 10, 190, 190], [0, 0, 5, 5], [150, 150, 200, 200]])
    for _ in range(20):
        im, out = RandomSizeCrop(50, 120)(image, t)
        w, h = im.size
        assert 50 <= w <= 120 and 50 <= h <= 120
        b = out["boxes"]
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
        assert (b[:, 0::2] <= w).all() and (b[:, 1::2] <= h).all() and (b >= 0).all()
        assert len(out["labels"]) == len(b) == len(out["area"])


def test_train_transform_outputs_normalised_boxes() -> None:
    random.seed(1)
    ds = ShapesDataset(4, 128, transform=build_train_transform((0.5,) * 3, (0.5,) * 3, [96, 112], 128,
                                                               crop_prescales=[100], crop_size=(64, 96)))
    for i in range(4):
        x, t = ds[i]
        assert x.shape[0] == 3 and max(x.shape[-2:]) <= 128 and tuple(t["size"].tolist()) == tuple(x.shape[-2:])
        xyxy = box_cxcywh_to_xyxy(t["boxes"])
        assert ((xyxy >= -1e-6) & (xyxy <= 1 + 1e-6)).all()


def test_pad_images_and_masks() -> None:
    batch, mask = pad_images([torch.ones(3, 4, 6), torch.ones(3, 5, 3)])
    assert batch.shape == (2, 3, 5, 6) and mask.shape == (2, 5, 6)
    assert mask[0, 4].all() and not mask[0, :4].any()
    assert mask[1, :, 3:].all() and not mask[1, :, :3].any()
    assert batch[1, :, :, 3:].abs().sum() == 0
    x, m, targets = collate_detection([(torch.ones(3, 4, 6), {"a": 1}), (torch.ones(3, 5, 3), {"a": 2})])
    assert x.shape == (2, 3, 5, 6) and [t["a"] for t in targets] == [1, 2]
    assert pad_images([torch.ones(3, 33, 40)], size_divisibility=32)[0].shape[-2:] == (64, 64)


def test_source_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="shapes:N"):
        open_detection_source("shapes:many", "train")
    with pytest.raises(DataError, match="not found"):
        open_detection_source(str(tmp_path / "nope"), "train")
    with pytest.raises(DataError, match="instances_train"):
        open_detection_source(str(tmp_path), "train")


@needs_tiny_coco
def test_tiny_coco_mapping_and_perfect_map() -> None:
    image_dir, ann = find_coco_split(TINY_COCO, "val")
    ds = CocoDetection(image_dir, ann)
    assert len(ds) == 50 and len(ds.classes) == 80 and ds.classes[0] == "person"
    assert ds.cat_to_label[90] == 79 and ds.skipped["crowd"] == 5
    gt = ds.coco_ground_truth()
    # training targets: non-crowd, non-degenerate boxes, labels contiguous
    n_targets = sum(len(ds.by_image.get(im["id"], [])) for im in ds.images)
    assert n_targets + sum(ds.skipped.values()) == len(gt["annotations"]) == 382
    image, t = ds.load(0)
    assert t["orig_size"].tolist() == [image.height, image.width] and int(t["labels"].max()) < 80
    # the ground truth itself, scored 1, gives AP 100
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"] if not a["iscrowd"]]
    stats = coco_map(gt, results)
    assert stats["AP"] == pytest.approx(100.0) and stats["AP50"] == pytest.approx(100.0)
    assert coco_map(gt, [])["AP"] == 0.0
