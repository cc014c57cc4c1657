"""COCO box mAP through pycocotools (imported only here, when an evaluation runs)."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import torch

from vitlab.errors import ConfigError

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def detections_to_coco(image_id: int, det: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """One image's post-processed detections (xyxy pixels, labels 0..K-1) -> COCO result rows."""
    boxes = det["boxes"].float().cpu()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    return [{"image_id": int(image_id), "category_id": int(l) + 1, "bbox": b, "score": float(s)}
            for b, l, s in zip(xywh, det["labels"].tolist(), det["scores"].tolist())]


def coco_map(ground_truth: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, float | None]:
    """The 12 standard COCO box statistics in percent (AP = AP@[.50:.95], ...).

    ``ground_truth`` is a COCO json dict (category ids as in ``results``); ``results`` are rows
    ``{"image_id", "category_id", "bbox" (xywh), "score"}``. No detections give zeros.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ConfigError("COCO mAP needs pycocotools: pip install 'vitlab[detection]'") from None
    if not results or not ground_truth.get("annotations"):
        return {k: 0.0 for k in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and tables
        gt = COCO()
        gt.dataset = {"info": {}, "licenses": [], **ground_truth}
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # pycocotools writes -1 for "no ground truth in this size range": reported as None (n/a)
    return {k: float(v) * 100 if v >= 0 else None for k, v in zip(STAT_NAMES, ev.stats)}
