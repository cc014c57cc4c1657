"""The one attention recorder: found by base class in ViTs, DeepViTs and DETR; maps and outputs pinned."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitlab.api import create_model
from vitlab.errors import ConfigError
from vitlab.layers import AttentionBase, MultiheadAttention, ReAttention, find_attention, record_attention
from vitlab.models.detr import create_detr


def _vit(**kw) -> nn.Module:
    torch.manual_seed(0)
    return create_model("vit_pico_patch7_28", depth=3, embed_dim=32, num_heads=2, mlp_dim=64, **kw).eval()


@pytest.fixture(scope="module")
def detr() -> nn.Module:
    torch.manual_seed(0)
    return create_detr("detr_vit_pico_64", num_classes=3, num_queries=5).eval()


def _rows_sum_to_one(a: torch.Tensor) -> None:
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]), atol=1e-5, rtol=0)


def test_vit_maps_have_documented_shapes_and_are_distributions() -> None:
    model, x = _vit(), torch.randn(2, 1, 28, 28)
    with record_attention(model) as rec:
        logits = model(x)
    assert rec.names == [f"blocks.{i}.attn" for i in range(3)] and rec.num_heads == [2, 2, 2]
    for a in rec.maps():
        assert a.shape == (2, 2, 17, 17)  # (B, H, T, T), T = 1 + 4 * 4
        _rows_sum_to_one(a)
    assert not any(m.wants_maps() for m in rec.modules)  # hooks gone: fused path again
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x), atol=1e-6, rtol=0)


def test_forward_intermediates_reads_the_same_maps() -> None:
    model, x = _vit(), torch.randn(2, 1, 28, 28)
    with torch.no_grad(), record_attention(model) as rec:
        model(x)
    out = model.forward_intermediates(x, return_attn=True)
    for i in range(3):
        torch.testing.assert_close(out["attn"][i], rec.layer(i), rtol=0, atol=0)
    some = model.forward_intermediates(x, indices=[0, 2], return_attn=True)["attn"]
    assert len(some) == 2 and torch.equal(some[0], rec.layer(0))  # block 1 fused: block 2 within rounding


def test_reattention_found_by_base_class_with_mixed_maps() -> None:
    model, x = _vit(attn="reattention", attn_args={"blocks": 1, "init": "random"}), torch.randn(2, 1, 28, 28)
    with torch.no_grad(), record_attention(model) as rec:
        model(x)
    assert isinstance(rec.modules[2], ReAttention) and rec.mixed[:2] == [None, None]
    _rows_sum_to_one(rec.layer(2, "softmax"))
    assert not torch.allclose(rec.layer(2, "mixed"), rec.layer(2, "softmax"))
    assert rec.layer(2) is rec.layer(2, "mixed") or torch.equal(rec.layer(2), rec.layer(2, "mixed"))
    with pytest.raises(ConfigError, match="does not transform"):
        rec.layer(0, "mixed")


def test_detr_attention_found_by_base_class(detr: nn.Module) -> None:
    names = [n for n, _ in find_attention(detr)]
    assert names[:2] == ["backbone.vit.blocks.0.attn", "backbone.vit.blocks.1.attn"]  # the ViT backbone too
    assert "transformer.encoder.layers.0.self_attn" in names
    assert "transformer.decoder.layers.1.multihead_attn" in names
    assert all(isinstance(m, AttentionBase) for _, m in find_attention(detr))


def test_detr_maps_shapes_rows_and_padding(detr: nn.Module) -> None:
    t = detr.transformer
    x, mask = torch.randn(2, 3, 64, 64), torch.zeros(2, 64, 64, dtype=torch.bool)
    mask[1, :, 32:] = True  # right half of image 1 is padding
    with torch.no_grad(), record_attention(detr, [t.encoder.layers[0].self_attn,
                                                  t.decoder.layers[-1].multihead_attn]) as rec:
        detr(x, mask)
    enc, cross = rec.maps()
    assert enc.shape == (2, 4, 64, 64) and cross.shape == (2, 4, 5, 64)  # (B, H, T, T), (B, H, Q, T); T = 8 * 8
    _rows_sum_to_one(enc)
    _rows_sum_to_one(cross)
    assert cross[1].view(4, 5, 8, 8)[..., 4:].abs().max() == 0  # padded keys get no attention


def test_detr_outputs_unchanged_by_recording(detr: nn.Module) -> None:
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        plain = detr(x)
        with record_attention(detr) as rec:
            recorded = detr(x)
    assert len(rec) == 2 + 1 + 2 * 2  # backbone blocks, encoder self, decoder self + cross
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(recorded[key], plain[key], atol=1e-6, rtol=0)


def test_detr_return_attn_is_the_recorded_cross_attention(detr: nn.Module) -> None:
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = detr(x, return_attn=True)
        with record_attention(detr, [detr.transformer.decoder.layers[-1].multihead_attn]) as rec:
            detr(x)
    torch.testing.assert_close(out["cross_attn"], rec.layer(0).mean(1), rtol=0, atol=1e-7)


def test_multihead_attention_matches_pytorch() -> None:
    torch.manual_seed(0)
    ours = MultiheadAttention(16, 4).eval()
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    assert ours.state_dict().keys() == ref.state_dict().keys()  # DETR checkpoints load unchanged
    ref.load_state_dict(ours.state_dict())
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 7, 16)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, 5:] = True
    fused = ref(q, kv, kv, key_padding_mask=mask, need_weights=False)[0]
    torch.testing.assert_close(ours(q, kv, kv, key_padding_mask=mask)[0], fused, rtol=0, atol=0)  # PyTorch's path
    want, want_w = ref(q, kv, kv, key_padding_mask=mask, need_weights=True)
    with record_attention(ours) as rec:
        got, got_w = ours(q, kv, kv, key_padding_mask=mask, need_weights=True)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_w, want_w, rtol=0, atol=1e-6)
    assert rec.layer(0).shape == (2, 4, 3, 7)


def test_recorder_refuses_foreign_layers_and_empty_models() -> None:
    with pytest.raises(ConfigError, match="no vitlab attention layers"):
        record_attention(nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="not vitlab attention layers of the model"):
        record_attention(_vit(), [MultiheadAttention(8, 2)])
    with record_attention(_vit()) as rec:
        pass
    with pytest.raises(ConfigError, match="nothing captured"):
        rec.layer(0)
