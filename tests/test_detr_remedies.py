"""DETR's convergence remedies: anchor-box queries with iterative refinement (DAB-DETR) and the
sigmoid focal loss / cost (Deformable DETR), checked against transformers' own implementations
and analytic cases; the defaults stay the original DETR."""

from __future__ import annotations

import pytest
import torch

from vitlab.api import load_checkpoint
from vitlab.models.detr import DetrConfig, HungarianMatcher, SetCriterion, create_detr, postprocess
from vitlab.models.detr.anchor_decoder import box_sine_embed, inverse_sigmoid
from vitlab.weights.vitlab_format import save_weights

TINY = dict(num_classes=2, num_queries=6, dec_layers=3)


def _tiny(**kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_detr("detr_vit_pico_64", **{**TINY, **kw}).eval()


def test_defaults_are_the_original_detr() -> None:
    """Default fields build the paper's layout: learned query embeddings and a C+1 softmax head."""
    cfg = DetrConfig()
    assert (cfg.anchor_queries, cfg.class_head) == (False, "softmax")
    keys = set(_tiny().state_dict())
    assert "query_embed.weight" in keys and not any("refpoint" in k or "ref_point_head" in k for k in keys)
    assert _tiny().class_embed.out_features == 3
    anchored = set(_tiny(anchor_queries=True, class_head="sigmoid").state_dict())
    assert "refpoint_embed.weight" in anchored and "query_embed.weight" not in anchored
    with pytest.raises(Exception, match="class_head"):
        DetrConfig().replace(class_head="tanh").validate()


def test_anchor_sine_embedding_equals_dab_detr() -> None:
    dab = pytest.importorskip("transformers.models.dab_detr.modeling_dab_detr")
    boxes = torch.rand(3, 5, 4, generator=torch.Generator().manual_seed(0))
    want = dab.encode_sinusoidal_position_embedding(boxes, num_pos_feats=32)
    assert torch.allclose(box_sine_embed(boxes, 64), want, atol=1e-6)
    # negative control: x and y in the image's order (x first) is a different embedding
    assert not torch.allclose(box_sine_embed(boxes[..., [1, 0, 2, 3]], 64), want, atol=1e-3)


def test_anchors_are_the_first_boxes_and_every_layer_refines_the_last() -> None:
    """At init (box head's last layer zero) every layer predicts its anchor; with a trained-looking
    head layer l's box is sigmoid(delta_l + logit(box_{l-1})), layer 0's starting at the anchor."""
    model = _tiny(anchor_queries=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    anchors = model.refpoint_embed.weight.sigmoid()
    out = model(x)
    layers = [a["pred_boxes"] for a in out["aux_outputs"]] + [out["pred_boxes"]]
    for boxes in layers:
        assert torch.allclose(boxes, anchors.expand_as(boxes), atol=1e-6)
    with torch.no_grad():  # a head that moves boxes
        model.bbox_embed.layers[-1].weight.normal_(0, 0.5)
        model.bbox_embed.layers[-1].bias.normal_(0, 0.5)
    captured = []
    handle = model.transformer.decoder.norm.register_forward_hook(lambda m, i, o: captured.append(o))
    out = model(x)
    handle.remove()
    layers = [a["pred_boxes"] for a in out["aux_outputs"]] + [out["pred_boxes"]]
    prev = anchors.expand_as(layers[0])
    for hs, boxes in zip(captured, layers):
        assert torch.allclose(boxes, (model.bbox_embed(hs) + inverse_sigmoid(prev)).sigmoid(), atol=1e-5)
        prev = boxes
    # negative control: refining from the anchors instead of the previous layer's box is not it
    assert not torch.allclose(layers[2], (model.bbox_embed(captured[2]) + inverse_sigmoid(anchors)).sigmoid(), atol=1e-3)


def test_anchors_learn_and_refinement_is_detached() -> None:
    """Layer 0's box loss trains the anchors; later layers see the previous box detached, so the
    last layer's box gradient reaches the box head only through its own delta."""
    model = _tiny(anchor_queries=True).train()
    with torch.no_grad():
        model.bbox_embed.layers[-1].weight.normal_(0, 0.5)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    out = model(x)
    out["aux_outputs"][0]["pred_boxes"].sum().backward()
    assert model.refpoint_embed.weight.grad.abs().sum() > 0
    # The last layer's box: d box / d (previous box) through the refinement is cut by the detach.
    # Compare d box_L / d anchors through the box path alone with the content path zeroed:
    model.zero_grad()
    for p in model.transformer.decoder.ref_point_head.parameters():
        p.requires_grad_(False)
        p.zero_()  # positional queries no longer depend on the anchors
    out = model(x)
    out["pred_boxes"].sum().backward()
    assert model.refpoint_embed.weight.grad is None or model.refpoint_embed.weight.grad.abs().sum() == 0
    model.zero_grad()
    out = model(x)
    out["aux_outputs"][0]["pred_boxes"].sum().backward()  # control: layer 0 still reaches them
    assert model.refpoint_embed.weight.grad.abs().sum() > 0


def _hf_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    logits = torch.randn(3, 8, 4, generator=gen) * 2
    boxes = torch.cat([torch.rand(3, 8, 2, generator=gen), torch.rand(3, 8, 2, generator=gen) * 0.4 + 0.05], -1)
    targets = []
    for n in (2, 0, 5):
        tb = torch.cat([torch.rand(n, 2, generator=gen), torch.rand(n, 2, generator=gen) * 0.4 + 0.05], -1)
        targets.append({"labels": torch.randint(0, 4, (n,), generator=gen), "boxes": tb})
    return logits, boxes, targets


def test_focal_matching_and_loss_equal_deformable_detr_in_transformers() -> None:
    loss_mod = pytest.importorskip("transformers.loss.loss_deformable_detr")
    logits, boxes, targets = _hf_batch(torch.Generator().manual_seed(3))
    hf_targets = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
    hf_matcher = loss_mod.DeformableDetrHungarianMatcher(class_cost=2, bbox_cost=5, giou_cost=2)
    want = hf_matcher({"logits": logits, "pred_boxes": boxes}, hf_targets)
    matcher = HungarianMatcher(2, 5, 2, focal=(0.25, 2.0))
    got = matcher({"pred_logits": logits, "pred_boxes": boxes}, targets)
    for (gi, gj), (wi, wj) in zip(got, want):
        order = torch.argsort(wi)
        assert torch.equal(gi, wi[order]) and torch.equal(gj, wj[order])
    # negative control: the softmax cost (on the same logits) assigns differently somewhere
    plain = HungarianMatcher(2, 5, 2)({"pred_logits": torch.cat([logits, torch.zeros(3, 8, 1)], -1),
                                        "pred_boxes": boxes}, targets)
    assert any(not torch.equal(a[1], b[1]) for a, b in zip(plain, got))

    crit = SetCriterion(4, matcher, focal=(0.25, 2.0))
    num_boxes = float(sum(len(t["labels"]) for t in targets))
    hf_loss = loss_mod.DeformableDetrImageLoss(hf_matcher, 4, 0.25, ["labels"])
    want_ce = hf_loss.loss_labels({"logits": logits}, hf_targets, want, num_boxes)["loss_ce"]
    got_ce = crit({"pred_logits": logits, "pred_boxes": boxes}, targets)["loss_ce"]
    assert torch.allclose(got_ce, want_ce, atol=1e-6)
    other = SetCriterion(4, matcher, focal=(0.5, 2.0))({"pred_logits": logits, "pred_boxes": boxes}, targets)
    assert not torch.allclose(other["loss_ce"], want_ce, atol=1e-3)  # the control: alpha matters


def test_sigmoid_postprocess_scores_every_slot_and_class() -> None:
    """Deformable DETR's read-out: (slot, class) pairs ranked by sigmoid, top min(100, Q*C)."""
    logits = torch.tensor([[[2.0, 1.0], [-3.0, 0.5]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.25, 0.1, 0.1]]])
    out = postprocess({"pred_logits": logits, "pred_boxes": boxes, "class_head": "sigmoid"}, torch.tensor([[100, 200]]))[0]
    assert out["scores"].tolist() == pytest.approx(torch.tensor([2.0, 1.0, 0.5, -3.0]).sigmoid().tolist())
    assert out["labels"].tolist() == [0, 1, 1, 0]
    assert torch.allclose(out["boxes"][[0, 1]], torch.tensor([[80.0, 30.0, 120.0, 70.0]] * 2))
    assert torch.allclose(out["boxes"][2], torch.tensor([40.0, 20.0, 60.0, 30.0]))
    # the softmax read-out of the same logits is one detection per slot
    soft = postprocess({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[100, 200]]))[0]
    assert len(soft["scores"]) == 2


def test_remedies_round_trip_through_a_checkpoint(tmp_path) -> None:
    model = _tiny(anchor_queries=True, class_head="sigmoid")
    path = tmp_path / "detr.safetensors"
    save_weights(path, model, ["rectangle", "ellipse"], {"epoch": 1})
    ck = load_checkpoint(path)
    assert ck.model.config == model.config
    x = torch.randn(1, 3, 64, 64)
    got, want = ck.model.eval()(x), model(x)
    assert torch.equal(got["pred_logits"], want["pred_logits"]) and torch.equal(got["pred_boxes"], want["pred_boxes"])
    assert got["pred_logits"].shape == (1, 6, 2) and got["class_head"] == "sigmoid"
