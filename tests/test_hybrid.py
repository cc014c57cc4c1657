"""Hybrid ViT: the BiT ResNetV2 stem, parameter counts and weights against timm's hybrids.

Parity tests build timm's models with 2 blocks on a small input: the same ResNet stem and the
same ViT blocks as the full models at a fraction of the compute.
"""

from __future__ import annotations

import functools

import pytest
import torch

import vitlab
from vitlab.errors import CheckpointError, ConfigError
from vitlab.layers.resnet_stem import ResNetV2, ResNetV2Embed, StdConv2d, pad_same
from vitlab.models.vit import build_vit
from vitlab.utils.flops import count_params

HYBRIDS = {  # vitlab preset (= timm name): (exact parameters, stride, ResNet stages)
    "vit_base_r50_s16_224": (98_659_112, 16, (3, 4, 9)),
    "vit_base_r50_s16_384": (98_950_952, 16, (3, 4, 9)),
    "vit_small_r26_s32_224": (36_431_912, 32, (2, 2, 2, 2)),
    "vit_small_r26_s32_384": (36_468_392, 32, (2, 2, 2, 2)),
}


@functools.lru_cache(maxsize=None)
def _meta(name: str) -> torch.nn.Module:
    with torch.device("meta"):
        return vitlab.create_model(name)


@pytest.mark.parametrize("name", sorted(HYBRIDS))
def test_param_counts(name: str) -> None:
    expected, stride, layers = HYBRIDS[name]
    model = _meta(name)
    assert count_params(model) == expected
    assert model.config.patch_size == stride and model.config.stem_layers == layers
    assert isinstance(model.patch_embed, ResNetV2Embed)
    side = model.config.img_size[0] // stride
    assert model.grid_size == (side, side) and model.pos_embed.shape[1] == 1 + side * side


@pytest.mark.parametrize("name", sorted(HYBRIDS))
def test_param_counts_and_keys_equal_timm(name: str) -> None:
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        theirs = timm.create_model(name, pretrained=False, num_classes=1000)
    ours = _meta(name)
    assert count_params(ours) == count_params(theirs)
    mine, their_sd = ours.state_dict(), theirs.state_dict()
    assert set(mine) == set(their_sd)
    assert all(tuple(mine[k].shape) == tuple(their_sd[k].shape) for k in mine)


def _timm_pair(name: str, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """timm's hybrid (2 blocks, 2x3 tokens, perturbed weights) and vitlab's loaded from its state dict."""
    timm = pytest.importorskip("timm")
    from vitlab.weights.convert_timm_hybrid import import_state

    stride = HYBRIDS[name][1]
    torch.manual_seed(seed)
    theirs = timm.create_model(name, pretrained=False, num_classes=5, depth=2, img_size=(2 * stride, 3 * stride)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # move every weight (GroupNorm affine, biases, tokens) off its init value
        for p in theirs.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    cfg, state = import_state(theirs.state_dict(), img_size=(2 * stride, 3 * stride))
    ours = build_vit(cfg).eval()
    ours.load_state_dict(state, strict=True)
    return theirs, ours


@pytest.mark.parametrize("name", ["vit_base_r50_s16_224", "vit_small_r26_s32_224"])
def test_timm_weights_give_the_same_logits(name: str) -> None:
    theirs, ours = _timm_pair(name, seed=0)
    assert ours.config.stem_layers == HYBRIDS[name][2] and ours.config.depth == 2
    assert ours.config.num_heads == {16: 12, 32: 6}[HYBRIDS[name][1]]
    stride = HYBRIDS[name][1]
    x = torch.randn(2, 3, 2 * stride, 3 * stride, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(x)
        got = ours(x)
        attn = ours.forward_intermediates(x, return_attn=True)["attn"]
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert attn[0].shape == (2, ours.config.num_heads, 7, 7)


def test_import_names_bad_keys() -> None:
    timm = pytest.importorskip("timm")
    from vitlab.weights.convert_timm_hybrid import import_state

    theirs = timm.create_model("vit_small_r26_s32_224", pretrained=False, num_classes=5, depth=1, img_size=64)
    state = dict(theirs.state_dict())
    state.pop("patch_embed.backbone.stages.1.blocks.0.norm2.bias")
    state["extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"missing .*norm2\.bias.*unexpected extra\.weight"):
        import_state(state)
    with pytest.raises(CheckpointError, match="not a ResNetV2 hybrid"):
        import_state({"pos_embed": torch.zeros(1, 5, 8)})


# ----------------------------------------------------------------------- the stem's parts
def test_std_conv_matches_timm_same_padding() -> None:
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    for k, s, size in [(7, 2, (15, 18)), (3, 2, (8, 9)), (1, 2, (6, 7)), (3, 1, (5, 6))]:
        ours = StdConv2d(4, 6, k, stride=s, eps=1e-8)
        theirs = timm_layers.StdConv2dSame(4, 6, k, stride=s, eps=1e-8)
        theirs.load_state_dict(ours.state_dict())
        x = torch.randn(2, 4, *size)
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
        assert ours(x).shape[-2:] == tuple(-(-n // s) for n in size)  # SAME: ceil(n / s)


def test_weight_standardisation() -> None:
    conv = StdConv2d(3, 8, 3)
    with torch.no_grad():
        conv.weight.mul_(5).add_(2)
        w = conv.standardized_weight().reshape(8, -1)
    torch.testing.assert_close(w.mean(1), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(w.var(1, unbiased=False), torch.ones(8), atol=1e-4, rtol=0)


def test_pad_same_and_resnet_shapes() -> None:
    x = torch.randn(1, 2, 7, 8)
    assert pad_same(x, 3, 2).shape[-2:] == (9, 9)  # 7 -> pad 2, 8 -> pad 1 (extra on the bottom/right)
    net = ResNetV2((1, 1), in_chans=1, width=32)
    assert net.stride == 8 and net.num_features == 256
    assert net(torch.randn(2, 1, 32, 24)).shape == (2, 256, 4, 3)
    with pytest.raises(ValueError):
        ResNetV2(())


def test_embed_and_config_checks() -> None:
    embed = ResNetV2Embed((32, 48), 8, 1, 16, layers=(1, 1), width=32)
    assert embed.grid_size == (4, 6) and embed(torch.randn(2, 1, 32, 48)).shape == (2, 24, 16)
    with pytest.raises(ValueError, match="stride"):
        ResNetV2Embed((32, 32), 16, 1, 16, layers=(1, 1), width=32)
    with pytest.raises(ConfigError, match="stem_layers"):
        vitlab.create_model("vit_small_r26_s32_224", stem_layers=(2, 2, 2))
    with pytest.raises(ConfigError, match="divisible"):
        vitlab.create_model("vit_small_r26_s32_224", img_size=48)


def test_tiny_hybrid_trains() -> None:
    torch.manual_seed(0)
    model = vitlab.create_model("vit_pico_patch4_28", img_size=32, stem="resnetv2", stem_layers=(1,), stem_width=32)
    assert model.grid_size == (8, 8)
    model.reset_classifier(10)
    torch.nn.init.normal_(model.head.weight, std=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    stem = model.patch_embed.backbone.stem.conv.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
