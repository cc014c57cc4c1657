"""Box formats and overlaps.

Boxes are ``cxcywh`` (centre, width, height; the model's output, normalised to [0, 1] of the
unpadded image) or ``xyxy`` (corners; what IoU, GIoU and the evaluation use).
"""

from __future__ import annotations

import torch


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre/size -> (..., 4) corners."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) corners -> (..., 4) centre/size."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """COCO's (x, y, w, h) -> corners."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack([x, y, x + w, y + h], dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) xyxy -> (N,) area (negative for inverted boxes; callers check validity)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def valid_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) xyxy -> (N,) bool: finite and x1 >= x0, y1 >= y0 (zero area is allowed)."""
    finite = torch.isfinite(boxes).all(-1)
    return finite & (boxes[..., 2] >= boxes[..., 0]) & (boxes[..., 3] >= boxes[..., 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (IoU (N, M), union (N, M))."""
    area1, area2 = box_area(boxes1), box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area1[:, None] + area2[None, :] - inter
    return inter / union.clamp(min=eps), union


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise GIoU (Rezatofighi et al. 2019) of (N, 4) and (M, 4) xyxy boxes -> (N, M) in [-1, 1].

    GIoU = IoU - (|C| - |A u B|) / |C|, C the smallest box enclosing A and B. Inverted boxes
    are not rejected here (that would crash a run on one bad prediction): callers sanitise and
    count them first (:func:`sanitize_boxes`).
    """
    iou, union = box_iou(boxes1, boxes2, eps)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    enclosing = (rb - lt).clamp(min=0).prod(-1)
    return iou - (enclosing - union) / enclosing.clamp(min=eps)


def sanitize_boxes(boxes_cxcywh: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Replace non-finite values by 0.5 and negative sizes by 0; returns (boxes, how many were bad).

    Predicted boxes come out of a sigmoid and are finite unless the weights went bad; this
    keeps the matcher (scipy rejects NaN costs) and GIoU alive so the run can report it.
    """
    finite = torch.isfinite(boxes_cxcywh)
    bad_rows = (~finite).any(-1) | (boxes_cxcywh[..., 2:] < 0).any(-1)
    n_bad = int(bad_rows.sum())
    if n_bad == 0:
        return boxes_cxcywh, 0
    fixed = torch.where(finite, boxes_cxcywh, torch.full_like(boxes_cxcywh, 0.5))
    fixed = torch.cat([fixed[..., :2], fixed[..., 2:].clamp(min=0)], dim=-1)
    return fixed, n_bad
