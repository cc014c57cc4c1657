"""Attention capture: every Attention (subclasses included), same logits with and without, no cost after."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from vitlab.analysis import capture_attention, find_attention
from vitlab.errors import ConfigError
from vitlab.layers import Attention
from vitlab.models import VisionTransformer

H = 4


class FixedMixAttention(Attention):
    """A re-attention stand-in: heads mixed by a fixed row-stochastic H x H matrix after the softmax."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        g = torch.Generator().manual_seed(1)
        self.register_buffer("mix", torch.rand(self.num_heads, self.num_heads, generator=g).softmax(dim=1))

    def transform_attn(self, attn: torch.Tensor) -> torch.Tensor:
        return torch.einsum("gh,bhij->bgij", self.mix, attn)


class HeadMixer(torch.nn.Module):
    def forward(self, attn: torch.Tensor) -> torch.Tensor:
        return attn.flip(1)


class NamedMixAttention(Attention):
    """Mixing exposed as a submodule ``reattend`` (as vitlab's ReAttention does)."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.reattend = HeadMixer()

    def transform_attn(self, attn: torch.Tensor) -> torch.Tensor:
        return self.reattend(attn)


def tiny(attn_layer=Attention, depth: int = 3, **kw) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, in_chans=3, num_classes=5, embed_dim=32, depth=depth,
                              num_heads=H, mlp_dim=64, attn_layer=attn_layer, **kw)
    with torch.no_grad():  # non-trivial attention: the default init gives near-uniform maps
        for blk in model.blocks:
            blk.attn.qkv.weight.mul_(20)
        model.head.weight.normal_()
    return model.eval()


@pytest.fixture()
def x() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_capture_on_and_off_give_the_same_logits(x: torch.Tensor) -> None:
    model = tiny()
    with torch.no_grad():
        plain = model(x)
        with capture_attention(model) as cap:
            captured = model(x)
        again = model(x)
    assert len(cap) == 3
    torch.testing.assert_close(captured, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, plain, rtol=0, atol=0)


def test_capture_leaves_fused_attention_after_exit(x: torch.Tensor) -> None:
    model = tiny()
    sdpa = F.scaled_dot_product_attention
    with mock.patch("vitlab.layers.attention.F.scaled_dot_product_attention", wraps=sdpa) as fused:
        with torch.no_grad(), capture_attention(model):
            assert all(m.wants_maps() for m in model.attention_layers)
            model(x)
        assert fused.call_count == 0  # capturing takes the explicit path
        with torch.no_grad():
            model(x)
        assert fused.call_count == 3  # and afterwards every layer is fused again
    for m in model.attention_layers:
        assert not m.wants_maps() and not m.attend._forward_hooks and not m.attn_drop._forward_pre_hooks


def test_captured_maps_are_probabilities_matching_forward_intermediates(x: torch.Tensor) -> None:
    model = tiny()
    with torch.no_grad(), capture_attention(model) as cap:
        model(x)
    maps = cap.effective()
    assert [tuple(m.shape) for m in maps] == [(3, H, 17, 17)] * 3
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones(3, H, 17))
    ref = model.forward_intermediates(x, return_attn=True)["attn"]
    for a, b in zip(maps, ref):
        torch.testing.assert_close(a, b)
    assert cap.mixed == [None, None, None]


def test_capture_finds_reattention_and_its_mixed_maps(x: torch.Tensor) -> None:
    model = tiny([Attention, FixedMixAttention, FixedMixAttention])
    assert [n for n, _ in find_attention(model)] == ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn"]
    with torch.no_grad(), capture_attention(model) as cap:
        model(x)
    assert cap.mixed[0] is None and cap.mixed[1] is not None and cap.mixed[2] is not None
    for i in (1, 2):
        soft, mixed = cap.layer(i, "softmax"), cap.layer(i, "mixed")
        torch.testing.assert_close(mixed, model.blocks[i].attn.transform_attn(soft))
        assert not torch.allclose(mixed, soft)
        torch.testing.assert_close(cap.effective()[i], mixed)
    torch.testing.assert_close(cap.effective()[0], cap.layer(0, "softmax"))
    with pytest.raises(ConfigError):
        cap.layer(0, "mixed")


def test_capture_reads_a_named_mixing_submodule(x: torch.Tensor) -> None:
    model = tiny(NamedMixAttention, depth=2)
    with torch.no_grad(), capture_attention(model) as cap:
        model(x)
    for i in range(2):
        torch.testing.assert_close(cap.layer(i, "mixed"), cap.layer(i, "softmax").flip(1))


def test_capture_finds_vitlab_reattention(x: torch.Tensor) -> None:
    reattention = pytest.importorskip("vitlab.layers.reattention")
    model = tiny(reattention.reattention_layers(3, last=2, init="random"))
    with torch.no_grad(), capture_attention(model) as cap:
        model(x)
    assert len(cap) == 3 and cap.mixed[0] is None
    torch.testing.assert_close(cap.layer(2, "mixed"), model.blocks[2].attn.reattend(cap.layer(2, "softmax")))


def test_capture_accumulates_forwards_until_cleared(x: torch.Tensor) -> None:
    model = tiny(depth=2)
    with torch.no_grad(), capture_attention(model) as cap:
        model(x)
        model(x[:1])
        assert cap.layer(0).shape[0] == 4
        cap.clear()
        model(x[:2])
        assert cap.layer(1).shape[0] == 2


def test_nothing_to_capture_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no vitlab attention"):
        with capture_attention(torch.nn.Linear(2, 2)):
            pass
