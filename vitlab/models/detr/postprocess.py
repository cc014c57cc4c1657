"""From the model's normalised outputs to detections in image pixels."""

from __future__ import annotations

import torch

from vitlab.models.detr.box_ops import box_cxcywh_to_xyxy, sanitize_boxes


@torch.no_grad()
def class_probs(logits: torch.Tensor, class_head: str = "softmax") -> torch.Tensor:
    """(..., C + 1) softmax-head or (..., C) sigmoid-head logits -> (..., C) object-class probabilities,
    read the way the head was trained ("no object" dropped for the softmax head)."""
    if class_head == "sigmoid":
        return logits.float().sigmoid()
    return logits.float().softmax(-1)[..., :-1]


def postprocess(outputs: dict, target_sizes: torch.Tensor, threshold: float = 0.0) -> list[dict[str, torch.Tensor]]:
    """Per image: ``scores`` (K,), ``labels`` (K,) int64 and ``boxes`` (K, 4) xyxy pixels.

    Args:
        outputs: ``pred_logits`` (B, Q, C+1), ``pred_boxes`` (B, Q, 4) normalised cxcywh.
        target_sizes: (B, 2) (height, width) of each image in the coordinates wanted (the
            original image for evaluation: boxes are relative to the unpadded image, so rescaling
            by its size undoes any resize).
        threshold: keep slots whose best object-class probability exceeds this (0 keeps all Q).

    Each slot's label is its most probable object class ("no object" excluded), its score that
    probability. With a sigmoid class head (``outputs["class_head"] == "sigmoid"``, logits
    (B, Q, C)) every (slot, class) pair is a detection scored by its sigmoid, as Deformable DETR
    does, and the best min(100, Q * C) are kept (COCO's maxDets). Non-finite boxes are replaced (see ``sanitize_boxes``) and counted in
    ``bad_boxes`` (a 0-d tensor per image).
    """
    prob = class_probs(outputs["pred_logits"], outputs.get("class_head", "softmax"))  # (B, Q, C)
    if outputs.get("class_head") == "sigmoid":
        C = prob.shape[-1]
        scores, flat = prob.flatten(1).topk(min(100, prob.shape[1] * C), dim=1)
        labels, slots = flat % C, flat // C
    else:
        scores, labels = prob.max(-1)
        slots = torch.arange(prob.shape[1], device=prob.device).expand(prob.shape[0], -1)
    results = []
    for b in range(prob.shape[0]):
        boxes, n_bad = sanitize_boxes(outputs["pred_boxes"][b].float())
        boxes = boxes[slots[b]]
        h, w = target_sizes[b].float().tolist()
        xyxy = box_cxcywh_to_xyxy(boxes) * torch.tensor([w, h, w, h], device=boxes.device)
        keep = scores[b] > threshold
        results.append({"scores": scores[b][keep], "labels": labels[b][keep], "boxes": xyxy[keep],
                        "bad_boxes": torch.tensor(n_bad)})
    return results
