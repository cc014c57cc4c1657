"""DETR training on COCO folders: an image that fails to decode mid-run is substituted and counted,
or stops the run with --set data.strict=true; never a crash at step N (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

from detr_tiny import TINY_FLAGS
from vitlab.cli.main import main
from vitlab.detection.synthetic import ShapesDataset


def _coco(root: Path, split: str, n: int, truncate: int | None = None) -> None:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / f"{split}2017").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        image, target = ShapesDataset(n, 64, seed=7 if split == "train" else 8).load(i)
        path = root / f"{split}2017" / f"{i:03d}.jpg"
        image.save(path, quality=95)
        if i == truncate:  # passes the header check, fails when decoded
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])
        images.append({"id": i + 1, "file_name": path.name, "height": 64, "width": 64})
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            x0, y0, x1, y1 = box
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": label + 1, "iscrowd": 0,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
    cats = [{"id": 1, "name": "rectangle"}, {"id": 2, "name": "ellipse"}]
    (root / "annotations" / f"instances_{split}2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))


def test_truncated_training_image_is_substituted_and_counted(tmp_path: Path) -> None:
    _coco(tmp_path / "coco", "train", 8, truncate=3)
    _coco(tmp_path / "coco", "val", 4)
    run = tmp_path / "run"
    args = ["detect", "train", "--data", str(tmp_path / "coco"), *TINY_FLAGS, "--epochs", "1",
            "--set", "tensorboard=false", "--out"]
    assert main([*args, str(run)]) == 0
    epoch = next(json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"kind": "epoch"' in l)
    assert epoch["bad_samples"] == 1 and epoch["steps"] == 2
    assert main([*args, str(tmp_path / "strict"), "--set", "data.strict=true"]) == 3  # one line, exit 3
