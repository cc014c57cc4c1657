"""DETR weights from elsewhere: the authors' checkpoint layout, and parity with Hugging Face
transformers' DetrForObjectDetection at random init (converted weights give the same outputs)."""

from __future__ import annotations

import argparse

import pytest
import torch

from vitlab.errors import CheckpointError
from vitlab.models.detr import create_detr
from vitlab.weights.convert_detr import (authors_to_vitlab, config_from_authors, load_authors_checkpoint, from_hf,
                                        vitlab_to_authors)

SMALL = dict(num_classes=5, num_queries=7, hidden_dim=32, nheads=4, enc_layers=1, dec_layers=2, dim_feedforward=64)


def _randomize_frozen_bn(model: torch.nn.Module, seed: int) -> None:
    """Random BN statistics so a wrong BN mapping cannot pass by identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(("running_mean", "bias")):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
            elif name.endswith(("running_var", "weight")):
                buf.copy_(torch.rand(buf.shape, generator=gen) * 0.5 + 0.75)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 96, 128, generator=gen)
    mask = torch.zeros(2, 96, 128, dtype=torch.bool)
    mask[1, 64:, :] = True
    mask[1, :, 96:] = True
    x[mask[:, None].expand_as(x)] = 0
    return x, mask


def test_authors_layout_round_trip_and_file(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_detr("detr_resnet50", backbone="resnet18", **SMALL).eval()
    _randomize_frozen_bn(model, 1)
    authors = vitlab_to_authors(model.state_dict())
    # the authors' names: Joiner(backbone, position) -> backbone.0.body.<resnet>; transformer as nn.Transformer-like
    for key in ("backbone.0.body.conv1.weight", "backbone.0.body.layer2.0.downsample.1.running_var",
                "transformer.encoder.layers.0.self_attn.in_proj_weight", "transformer.decoder.layers.1.multihead_attn.out_proj.bias",
                "transformer.decoder.layers.0.norm3.weight", "transformer.decoder.norm.weight", "query_embed.weight",
                "input_proj.weight", "class_embed.bias", "bbox_embed.layers.2.weight"):
        assert key in authors, key
    assert not any(k.startswith("backbone.body") for k in authors)
    assert authors_to_vitlab(authors).keys() == model.state_dict().keys()
    cfg = config_from_authors(authors, nheads=4)
    assert cfg == model.config.replace(dropout=cfg.dropout)
    path = tmp_path / "detr.pth"
    torch.save({"model": {**authors, "backbone.0.body.bn1.num_batches_tracked": torch.tensor(0)}}, path)
    loaded = load_authors_checkpoint(path, nheads=4, dropout=0.0).eval()
    x, mask = _batch()
    a, b = model(x, mask), loaded(x, mask)
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])
    # a training checkpoint that pickles its argparse namespace is refused, not unpickled
    torch.save({"model": authors, "args": argparse.Namespace(lr=1e-4)}, tmp_path / "train.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_authors_checkpoint(tmp_path / "train.pth")
    with pytest.raises(CheckpointError, match="missing"):
        config_from_authors({"class_embed.weight": torch.zeros(3, 4)})


def test_r50_authors_key_count() -> None:
    """DETR-R50 in the authors' layout: 320 backbone tensors (convs + 4 frozen-BN buffers each) + 169 others."""
    with torch.device("meta"):
        model = create_detr("detr_resnet50")
    keys = vitlab_to_authors(model.state_dict())
    assert sum(k.startswith("backbone.0.body.") for k in keys) == 53 + 53 * 4
    assert config_from_authors(keys).backbone == "resnet50"


def _hf_model(use_timm: bool):
    transformers = pytest.importorskip("transformers")
    kw = dict(num_labels=SMALL["num_classes"], d_model=32, encoder_layers=1, decoder_layers=2,
              encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
              num_queries=7, use_pretrained_backbone=False)
    if use_timm:
        pytest.importorskip("timm")
        cfg = transformers.DetrConfig(use_timm_backbone=True, backbone="resnet18", **kw)
    else:
        bb = transformers.ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
                                       embedding_size=64, out_features=["stage4"])
        cfg = transformers.DetrConfig(use_timm_backbone=False, backbone_config=bb, **kw)
    torch.manual_seed(0)
    model = transformers.DetrForObjectDetection(cfg).eval()
    _randomize_frozen_bn(model, 2)
    # HF initialises linears with std 0.02, which leaves every output nearly constant; O(1) weights
    # make the comparison sensitive to any mis-mapped tensor (q/k swapped, wrong norm, ...).
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + (1.0 if "norm" in name and "weight" in name else 0.0))
    return model


@pytest.mark.parametrize("use_timm", [True, False], ids=["timm-resnet18", "hf-resnet18"])
def test_parity_with_transformers(use_timm: bool) -> None:
    """Built offline (use_pretrained_backbone=False, no download). HF's auxiliary_loss=True path
    feeds the normed state into the next decoder layer, so parity is checked with it off (default)."""
    hf = _hf_model(use_timm)
    ours = from_hf(hf, dropout=0.0).eval()
    x, mask = _batch()
    with torch.no_grad():
        want = hf(pixel_values=x, pixel_mask=(~mask).long())
        got = ours(x, mask)
    assert want.logits.std() > 0.3 and want.pred_boxes.std() > 0.05  # outputs carry signal
    assert torch.allclose(got["pred_logits"], want.logits, atol=1e-4, rtol=1e-4)
    assert torch.allclose(got["pred_boxes"], want.pred_boxes, atol=1e-5)
    # and a deliberately wrong map (q and k swapped in one layer) is caught by these tolerances
    state = ours.state_dict()
    w = state["transformer.encoder.layers.0.self_attn.in_proj_weight"]
    d = w.shape[1]
    state["transformer.encoder.layers.0.self_attn.in_proj_weight"] = torch.cat([w[d:2 * d], w[:d], w[2 * d:]])
    ours.load_state_dict(state)
    with torch.no_grad():
        assert (ours(x, mask)["pred_logits"] - want.logits).abs().max() > 1e-2


def test_the_authors_layout_refuses_what_it_cannot_hold() -> None:
    """The DETR remedies (anchor queries, a sigmoid head) would load into the original DETR as wrong models."""
    with torch.device("meta"):
        anchors = create_detr("detr_resnet50", anchor_queries=True).state_dict()
        plain = create_detr("detr_resnet50").state_dict()
    with pytest.raises(CheckpointError, match="anchor-query DETR"):
        vitlab_to_authors(anchors)
    with pytest.raises(CheckpointError, match="'sigmoid' class head"):
        vitlab_to_authors(plain, class_head="sigmoid")
    assert "query_embed.weight" in vitlab_to_authors(plain)  # the original architecture still converts
