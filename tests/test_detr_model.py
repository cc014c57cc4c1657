"""The DETR model: paper parameter counts, shapes, masks, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from vitlab.api import load_checkpoint
from vitlab.weights.vitlab_format import save_weights
from vitlab.errors import ConfigError
from vitlab.models.detr import DetrConfig, create_detr
from vitlab.models.detr.position_encoding import PositionEmbeddingSine


def test_r50_parameter_counts_match_paper() -> None:
    """The authors' DETR-R50: 41,302,368 trainable; 41,524,768 with the frozen stem and layer1."""
    with torch.device("meta"):
        model = create_detr("detr_resnet50")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert (trainable, total) == (41_302_368, 41_524_768)
    cfg = model.config
    assert (cfg.hidden_dim, cfg.nheads, cfg.enc_layers, cfg.dec_layers, cfg.dim_feedforward, cfg.num_queries) == \
        (256, 8, 6, 6, 2048, 100)
    assert model.class_embed.out_features == 92 and len(model.bbox_embed.layers) == 3
    # every BatchNorm is frozen (buffers, not parameters)
    assert not any("bn" in n for n, _ in model.named_parameters())


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_detr("detr_vit_pico_128", num_classes=3, num_queries=7, dec_layers=3).eval()


def test_forward_shapes_and_aux(tiny: torch.nn.Module) -> None:
    out = tiny(torch.randn(2, 3, 96, 128), return_attn=True)
    assert out["pred_logits"].shape == (2, 7, 4) and out["pred_boxes"].shape == (2, 7, 4)
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    assert len(out["aux_outputs"]) == 2 and out["aux_outputs"][0]["pred_boxes"].shape == (2, 7, 4)
    assert out["feature_size"] == (16, 16) and out["cross_attn"].shape == (2, 7, 256)
    # padded-out region gets no cross-attention
    mask = torch.zeros(2, 128, 128, dtype=torch.bool)
    mask[:, :, 64:] = True
    attn = tiny(torch.randn(2, 3, 128, 128), mask, return_attn=True)["cross_attn"].view(2, 7, 16, 16)
    assert attn[..., 8:].abs().max() == 0 and torch.allclose(attn.sum((-1, -2)), torch.ones(2, 7))
    with pytest.raises(ValueError, match="larger than the ViT"):
        tiny(torch.randn(1, 3, 160, 64))


def test_padding_does_not_change_unpadded_result(tiny: torch.nn.Module) -> None:
    """An image padded with a mask predicts what it predicts alone (the ViT pads to its size anyway)."""
    x = torch.randn(1, 3, 80, 96)
    alone = tiny(x)
    padded = torch.zeros(1, 3, 112, 128)
    padded[..., :80, :96] = x
    mask = torch.ones(1, 112, 128, dtype=torch.bool)
    mask[:, :80, :96] = False
    both = tiny(padded, mask)
    assert torch.allclose(alone["pred_boxes"], both["pred_boxes"], atol=1e-5)


def test_sine_encoding_ignores_padding() -> None:
    pe = PositionEmbeddingSine(16)
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask_p = torch.ones(1, 7, 9, dtype=torch.bool)
    mask_p[:, :4, :6] = False
    assert torch.allclose(pe(mask), pe(mask_p)[..., :4, :6])
    assert pe(mask).shape == (1, 32, 4, 6)


def test_checkpoint_round_trip(tiny: torch.nn.Module, tmp_path) -> None:
    path = tmp_path / "detr.safetensors"
    save_weights(path, tiny, ["a", "b", "c"], {"epoch": 1})
    ck = load_checkpoint(path)
    assert ck.class_names == ["a", "b", "c"] and ck.model.config == tiny.config
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(ck.model.eval()(x)["pred_logits"], tiny(x)["pred_logits"])


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown DETR option"):
        DetrConfig().replace(width=3)
    with pytest.raises(ConfigError, match="not divisible"):
        create_detr("detr_vit_pico_128", hidden_dim=66)
    with pytest.raises(ConfigError, match="unknown backbone"):
        create_detr("detr_resnet50", backbone="vgg16")
