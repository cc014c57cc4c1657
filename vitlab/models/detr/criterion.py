"""DETR's set loss (paper, Eq. 2): match, then classification + box losses on the matched pairs.

* ``loss_ce``: cross-entropy over num_classes + 1 for every slot; unmatched slots target
  "no object", whose weight is ``eos_coef`` (0.1) to offset their number.
* ``loss_bbox``: L1 between matched normalised cxcywh boxes; ``loss_giou``: 1 - GIoU. Both are
  summed over matched pairs and divided by the number of target boxes in the batch.
* Logged only (no gradient): ``cardinality_error`` (|#slots not predicting no-object - #targets|,
  mean over images), ``class_error`` (100 - top-1 of matched slots), ``bad_pred_boxes`` (predicted
  boxes that were NaN / inverted and were sanitised) and ``bad_costs`` (non-finite matching costs).

With ``aux_outputs`` present, the same losses are added for every decoder layer (suffix ``_0``...).

With a sigmoid class head (``focal=(alpha, gamma)``, Deformable DETR) ``loss_ce`` is instead the
sigmoid focal loss (torchvision's) of every slot and class against the matched one-hot targets,
summed and divided by the number of target boxes; no "no object" class, no ``eos_coef``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.models.detr.box_ops import box_cxcywh_to_xyxy, generalized_box_iou, sanitize_boxes
from vitlab.models.detr.matcher import HungarianMatcher

LOSS_NAMES = ("loss_ce", "loss_bbox", "loss_giou")


class SetCriterion(nn.Module):
    """Hungarian-matched set loss.

    Args:
        num_classes: object classes (the "no object" class is index ``num_classes``).
        matcher: :class:`HungarianMatcher`.
        weight_ce, weight_bbox, weight_giou: loss weights (paper: 1, 5, 2).
        eos_coef: cross-entropy weight of the "no object" class (paper: 0.1).
        focal: (alpha, gamma) of the focal loss for a sigmoid class head (0.25, 2.0); None: the
            softmax head's cross-entropy.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_ce: float = 1.0, weight_bbox: float = 5.0,
                 weight_giou: float = 2.0, eos_coef: float = 0.1, focal: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.focal = focal
        self.matcher = matcher
        self.weights = {"loss_ce": weight_ce, "loss_bbox": weight_bbox, "loss_giou": weight_giou}
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def _layer_losses(self, out: dict, targets: list[dict], num_boxes: float,
                      ce_norm: float | None = None) -> dict[str, torch.Tensor]:
        logits = out["pred_logits"].float()  # (B, Q, C+1)
        boxes, n_bad = sanitize_boxes(out["pred_boxes"].float())
        indices = self.matcher({"pred_logits": logits, "pred_boxes": boxes}, targets)
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(logits.device)
        src_idx = torch.cat([src for src, _ in indices]).to(logits.device)

        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(logits.device)
        target_classes[batch_idx, src_idx] = matched_labels
        loss_ce = self._class_loss(logits, target_classes, num_boxes, ce_norm)

        src_boxes = boxes[batch_idx, src_idx]
        tgt_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(logits.device).float()
        loss_bbox = F.l1_loss(src_boxes, tgt_boxes, reduction="none").sum() / num_boxes
        if len(tgt_boxes):
            giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(tgt_boxes)))
            loss_giou = (1 - giou).sum() / num_boxes
        else:
            loss_giou = boxes.sum() * 0.0  # keeps the graph (and DDP) happy on an empty batch

        with torch.no_grad():
            if self.focal is None:
                n_pred = (logits.argmax(-1) != self.num_classes).sum(1).float()
            else:  # a slot "predicts an object" when some class is more likely than not
                n_pred = (logits.sigmoid().max(-1).values > 0.5).sum(1).float()
            n_tgt = torch.tensor([float(len(t["labels"])) for t in targets], device=logits.device)
            card = (n_pred - n_tgt).abs().mean()
            if len(matched_labels):
                acc = (logits[batch_idx, src_idx].argmax(-1) == matched_labels).float().mean() * 100
            else:
                acc = torch.tensor(100.0, device=logits.device)
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou, "cardinality_error": card,
                "class_error": 100 - acc, "bad_pred_boxes": torch.tensor(float(n_bad)),
                "bad_costs": torch.tensor(float(self.matcher.last_bad_costs))}

    def _class_loss(self, logits: torch.Tensor, target_classes: torch.Tensor, num_boxes: float,
                    ce_norm: float | None) -> torch.Tensor:
        """logits (B, Q, C+1) or (B, Q, C) with focal; target_classes (B, Q), ``num_classes`` = none."""
        if self.focal is not None:
            from torchvision.ops import sigmoid_focal_loss

            onehot = F.one_hot(target_classes, self.num_classes + 1)[..., :-1].to(logits.dtype)
            alpha, gamma = self.focal
            return sigmoid_focal_loss(logits, onehot, alpha, gamma, reduction="sum") / num_boxes
        weight = self.empty_weight.to(logits.device)
        if ce_norm is None:
            return F.cross_entropy(logits.transpose(1, 2), target_classes, weight)
        # this rank's share of the global batch's weighted mean
        return F.cross_entropy(logits.transpose(1, 2), target_classes, weight, reduction="sum") / ce_norm

    def forward(self, outputs: dict, targets: list[dict], global_counts: tuple[float, float, int] | None = None,
                world_size: int = 1) -> dict[str, torch.Tensor]:
        """Losses of a batch.

        Args:
            outputs: the model's output dict (``pred_logits``, ``pred_boxes``, ``aux_outputs``).
            targets: per image ``labels`` (M,) int64 and ``boxes`` (M, 4) normalised cxcywh.
            global_counts: under data parallelism, (target boxes, matchable boxes = sum of
                min(M, Q), images) of the whole global batch. The losses are then normalised by the
                global batch and multiplied by ``world_size``, so that DDP's gradient average equals
                the gradient of one process on the global batch (DETR's own code normalises the
                box losses this way; here the weighted cross-entropy is too).

        Returns:
            ``loss`` (the weighted total, the one to backpropagate), the unweighted final-layer
            losses, the same per auxiliary layer with suffix ``_i``, and the logged statistics.
        """
        num_boxes = float(max(sum(len(t["labels"]) for t in targets), 1))
        ce_norm = None
        if global_counts is not None:
            boxes, matched, images = global_counts
            slots = images * outputs["pred_logits"].shape[1]
            eos = float(self.empty_weight[-1])
            # The weights of all slots of the global batch: matched slots 1, the rest eos_coef.
            ce_norm = (matched + (slots - matched) * eos) / world_size
            num_boxes = max(boxes, 1.0) / world_size
        stats = self._layer_losses(outputs, targets, num_boxes, ce_norm)
        total = sum(self.weights[k] * stats[k] for k in LOSS_NAMES)
        for i, aux in enumerate(outputs.get("aux_outputs") or []):
            layer = self._layer_losses(aux, targets, num_boxes, ce_norm)
            for k in LOSS_NAMES:
                stats[f"{k}_{i}"] = layer[k]
                total = total + self.weights[k] * layer[k]
            stats["bad_pred_boxes"] = stats["bad_pred_boxes"] + layer["bad_pred_boxes"]
        stats["loss"] = total
        return stats
