"""One evaluation pass of a DETR: validation losses and COCO-format detections.

Training runs on the one engine (:mod:`vitlab.engine.fit`) through
:class:`vitlab.tasks.detection.DetectionTask`. NaN or degenerate predicted boxes are sanitised by
the criterion and the postprocessor and counted (``bad_pred_boxes``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from vitlab.detection.coco_eval import detections_to_coco
from vitlab.models.detr.postprocess import postprocess
from vitlab.utils.device import autocast

LOGGED = ("loss", "loss_ce", "loss_bbox", "loss_giou", "cardinality_error", "class_error")


def to_device(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    criterion: nn.Module | None,
    loader: Iterable,
    device: torch.device,
    precision: str,
    progress: bool = False,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Losses (if ``criterion``) and COCO-format detections (all slots, in original-image pixels).

    Returns (mean ``val_*`` losses and ``val_bad_pred_boxes``, result rows for :func:`coco_map`).
    """
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    batches = bad = 0
    results: list[dict[str, Any]] = []
    for images, mask, targets in tqdm(loader, desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        images, mask = images.to(device), mask.to(device)
        targets = to_device(targets, device)
        with autocast(device, precision):
            outputs = model(images, mask)
        if criterion is not None:
            losses = criterion(outputs, targets)
            for k in LOGGED:
                sums[k] += float(losses[k].item())
        batches += 1
        sizes = torch.stack([t["orig_size"] for t in targets])
        for t, det in zip(targets, postprocess(outputs, sizes)):
            bad += int(det["bad_boxes"])
            results += detections_to_coco(t["image_id"], det)
    stats = {f"val_{k}": v / max(batches, 1) for k, v in sums.items()}
    stats["val_bad_pred_boxes"] = bad
    return stats, results
