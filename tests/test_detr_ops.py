"""DETR math: box conversions, GIoU, Hungarian matching, the set criterion, post-processing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from vitlab.models.detr.box_ops import (box_cxcywh_to_xyxy, box_xywh_to_xyxy, box_xyxy_to_cxcywh, generalized_box_iou,
                                        sanitize_boxes)
from vitlab.models.detr.criterion import SetCriterion
from vitlab.models.detr.matcher import HungarianMatcher
from vitlab.models.detr.postprocess import postprocess


def _random_cxcywh(n: int, gen: torch.Generator) -> torch.Tensor:
    c = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 0.5 + 0.01
    return torch.cat([c, wh], -1)


def test_box_conversions_round_trip() -> None:
    gen = torch.Generator().manual_seed(0)
    b = _random_cxcywh(100, gen)
    assert torch.allclose(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(b)), b, atol=1e-12)
    xyxy = box_cxcywh_to_xyxy(b)
    assert torch.allclose(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(xyxy)), xyxy, atol=1e-12)
    xywh = torch.tensor([[10.0, 20.0, 30.0, 5.0]])
    assert box_xywh_to_xyxy(xywh).tolist() == [[10.0, 20.0, 40.0, 25.0]]
    # batched leading dims work too
    assert box_cxcywh_to_xyxy(b.view(10, 10, 4)).shape == (10, 10, 4)


def _giou_reference(a: list[float], b: list[float]) -> float:
    """GIoU by the definition, in plain Python."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    union = area(a) + area(b) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


def test_giou_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(1)
    a = box_cxcywh_to_xyxy(_random_cxcywh(7, gen))
    b = box_cxcywh_to_xyxy(_random_cxcywh(5, gen))
    b[0] = a[0]  # identical pair: GIoU 1
    b[1] = torch.tensor([5.0, 5.0, 6.0, 6.0], dtype=torch.float64)  # far away: GIoU close to -1
    got = generalized_box_iou(a, b)
    want = torch.tensor([[_giou_reference(x.tolist(), y.tolist()) for y in b] for x in a], dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-9)
    assert got[0, 0].item() == pytest.approx(1.0)
    assert (got >= -1).all() and (got <= 1).all()


def _batch(gen: torch.Generator, sizes: list[int], q: int = 12, c: int = 5) -> tuple[dict, list[dict]]:
    outputs = {"pred_logits": torch.randn(len(sizes), q, c + 1, generator=gen),
               "pred_boxes": torch.rand(len(sizes), q, 4, generator=gen) * 0.5 + 0.1}
    targets = [{"labels": torch.randint(0, c, (n,), generator=gen), "boxes": _random_cxcywh(n, gen).float()}
               for n in sizes]
    return outputs, targets


def test_batched_matcher_equals_single_and_handles_empty() -> None:
    gen = torch.Generator().manual_seed(2)
    matcher = HungarianMatcher(1, 5, 2)
    outputs, targets = _batch(gen, [3, 0, 12, 1])
    batched = matcher(outputs, targets)
    for b, (rows, cols) in enumerate(batched):
        single = matcher.match_single(outputs["pred_logits"][b], outputs["pred_boxes"][b],
                                      targets[b]["labels"], targets[b]["boxes"])
        assert torch.equal(rows, single[0]) and torch.equal(cols, single[1])
        n = len(targets[b]["labels"])
        assert len(rows) == n and sorted(cols.tolist()) == list(range(n)) and len(set(rows.tolist())) == n
    assert len(batched[1][0]) == 0
    # a batch without any target at all
    outputs, targets = _batch(gen, [0, 0])
    assert all(len(r) == 0 and len(c) == 0 for r, c in matcher(outputs, targets))


def test_matcher_is_optimal_on_small_problem() -> None:
    """The assignment's total cost equals the brute-force minimum over all injections."""
    gen = torch.Generator().manual_seed(3)
    matcher = HungarianMatcher(1, 5, 2)
    outputs, targets = _batch(gen, [3], q=5)
    from vitlab.models.detr.matcher import _cost_matrix

    cost = _cost_matrix(outputs["pred_logits"][0], outputs["pred_boxes"][0], targets[0]["labels"],
                        targets[0]["boxes"], 1, 5, 2)
    rows, cols = matcher(outputs, targets)[0]
    got = cost[rows, cols].sum().item()
    best = min(sum(cost[p[j], j].item() for j in range(3)) for p in itertools.permutations(range(5), 3))
    assert got == pytest.approx(best, rel=1e-6)


def test_criterion_finite_and_zero_at_perfect_prediction() -> None:
    gen = torch.Generator().manual_seed(4)
    matcher = HungarianMatcher(1, 5, 2)
    crit = SetCriterion(5, matcher, eos_coef=0.1)
    outputs, targets = _batch(gen, [2, 0, 4])
    outputs["pred_logits"].requires_grad_(True)
    outputs["aux_outputs"] = [{"pred_logits": outputs["pred_logits"] * 1.0, "pred_boxes": outputs["pred_boxes"]}]
    losses = crit(outputs, targets)
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert {"loss_ce_0", "loss_bbox_0", "loss_giou_0", "cardinality_error", "class_error"} <= set(losses)
    losses["loss"].backward()
    assert torch.isfinite(outputs["pred_logits"].grad).all()
    # A perfect prediction: the matched slots hold the targets, every other slot says "no object".
    q = 6
    logits = torch.full((1, q, 6), -30.0)
    logits[0, :, 5] = 30.0
    boxes = torch.full((1, q, 4), 0.5)
    tgt = targets[2]
    for j in range(4):
        logits[0, j, 5], logits[0, j, tgt["labels"][j]] = -30.0, 30.0
        boxes[0, j] = tgt["boxes"][j]
    perfect = crit({"pred_logits": logits, "pred_boxes": boxes}, [tgt])
    assert perfect["loss"].item() < 1e-5 and perfect["cardinality_error"].item() == 0


def test_nan_and_degenerate_boxes_are_counted_not_fatal() -> None:
    gen = torch.Generator().manual_seed(5)
    crit = SetCriterion(5, HungarianMatcher(1, 5, 2))
    outputs, targets = _batch(gen, [3, 2])
    outputs["pred_boxes"][0, 0] = float("nan")
    outputs["pred_boxes"][1, 3, 2] = -0.2  # negative width
    outputs["pred_logits"][1, 1] = float("nan")
    losses = crit(outputs, targets)
    assert losses["bad_pred_boxes"].item() == 2
    assert losses["bad_costs"].item() > 0
    assert torch.isfinite(losses["loss_bbox"]) and torch.isfinite(losses["loss_giou"])
    fixed, n = sanitize_boxes(torch.tensor([[float("inf"), 0.5, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2]]))
    assert n == 1 and torch.isfinite(fixed).all()
    dets = postprocess(outputs, torch.tensor([[100, 200], [50, 60]]))
    assert dets[0]["bad_boxes"].item() == 1 and torch.isfinite(dets[0]["boxes"]).all()


def test_postprocess_scales_to_pixels() -> None:
    logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 0.0, 9.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1]]])
    out = postprocess({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[100, 200]]), threshold=0.5)[0]
    assert out["labels"].tolist() == [0]
    assert np.allclose(out["boxes"].tolist(), [[80.0, 30.0, 120.0, 70.0]])
