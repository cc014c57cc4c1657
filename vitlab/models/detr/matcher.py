"""Hungarian matching of predicted slots to ground-truth objects (DETR paper, Eq. 1).

The cost of giving target j to slot i is
``cost_class * -p_i(c_j) + cost_bbox * |b_i - b_j|_1 + cost_giou * -GIoU(b_i, b_j)`` and the
assignment minimising the total is found by scipy's ``linear_sum_assignment`` per image.
Non-finite costs (from a prediction gone bad) are replaced by a large finite value and counted,
so matching never raises on them.
"""

from __future__ import annotations

import torch
from torch import nn

from vitlab.models.detr.box_ops import box_cxcywh_to_xyxy, generalized_box_iou, sanitize_boxes

_BAD_COST = 1e8


def _cost_matrix(logits: torch.Tensor, boxes: torch.Tensor, tgt_labels: torch.Tensor, tgt_boxes: torch.Tensor,
                 w_class: float, w_bbox: float, w_giou: float, focal: tuple[float, float] | None = None) -> torch.Tensor:
    """logits (N, C+1) (softmax head) or (N, C) (``focal``: (alpha, gamma) of the sigmoid head),
    boxes (N, 4) cxcywh; targets (M,), (M, 4) -> cost (N, M)."""
    boxes, _ = sanitize_boxes(boxes.float())
    tgt_boxes = tgt_boxes.float()
    if focal is None:
        cost_class = -logits.float().softmax(-1)[:, tgt_labels]
    else:  # Deformable DETR's focal cost: the focal loss of calling it the class minus of not
        alpha, gamma = focal
        prob = logits.float().sigmoid()[:, tgt_labels]
        pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
        neg = (1 - alpha) * prob**gamma * -(1 - prob + 1e-8).log()
        cost_class = pos - neg
    cost_bbox = torch.cdist(boxes, tgt_boxes, p=1)
    cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(tgt_boxes))
    return w_bbox * cost_bbox + w_class * cost_class + w_giou * cost_giou


def _assign(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    from scipy.optimize import linear_sum_assignment

    bad = ~torch.isfinite(cost)
    n_bad = int(bad.sum())
    if n_bad:
        cost = torch.where(bad, torch.full_like(cost, _BAD_COST), cost)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64), n_bad


class HungarianMatcher(nn.Module):
    """One-to-one matching of slots to targets, per image, on a weighted sum of three costs.

    Args:
        cost_class, cost_bbox, cost_giou: weights of the class, L1 and GIoU costs (paper: 1, 5, 2).
        focal: (alpha, gamma) for a sigmoid class head: the class cost is then the focal one
            (Deformable DETR: 0.25, 2.0); None: the paper's ``-p(class)`` of a softmax head.
    """

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 focal: tuple[float, float] | None = None) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matcher costs are 0")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.focal = focal
        self.last_bad_costs = 0  # non-finite cost entries replaced in the last call

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match a batch.

        Args:
            outputs: ``pred_logits`` (B, Q, C+1), or (B, Q, C) with ``focal``; ``pred_boxes`` (B, Q, 4) normalised cxcywh.
            targets: B dicts with ``labels`` (M_b,) int64 and ``boxes`` (M_b, 4) normalised cxcywh.

        Returns:
            B pairs (slot indices, target indices), each (min(Q, M_b),) int64, sorted by slot.
        """
        B, Q = outputs["pred_logits"].shape[:2]
        sizes = [len(t["boxes"]) for t in targets]
        self.last_bad_costs = 0
        if sum(sizes) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in range(B)]
        # One cost matrix for the whole batch (one set of kernels), split per image for scipy.
        cost = _cost_matrix(outputs["pred_logits"].flatten(0, 1), outputs["pred_boxes"].flatten(0, 1),
                            torch.cat([t["labels"] for t in targets]), torch.cat([t["boxes"] for t in targets]),
                            self.cost_class, self.cost_bbox, self.cost_giou, self.focal)
        cost = cost.view(B, Q, -1).cpu()
        out = []
        for b, c in enumerate(cost.split(sizes, -1)):
            rows, cols, n_bad = _assign(c[b])
            self.last_bad_costs += n_bad
            out.append((rows, cols))
        return out

    @torch.no_grad()
    def match_single(self, logits: torch.Tensor, boxes: torch.Tensor, tgt_labels: torch.Tensor,
                     tgt_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same matching for one image: logits (Q, C+1) (or (Q, C)), boxes (Q, 4) against M targets."""
        if len(tgt_boxes) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return empty, empty
        cost = _cost_matrix(logits, boxes, tgt_labels, tgt_boxes, self.cost_class, self.cost_bbox, self.cost_giou,
                            self.focal)
        rows, cols, _ = _assign(cost.cpu())
        return rows, cols
