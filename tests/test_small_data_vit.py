"""Shifted Patch Tokenization and Locality Self-Attention (Lee et al. 2021) as vitlab layers.

Each part is checked against a construction written here from the paper / the authors' code
(torch.roll with the wrapped border zeroed, patches cut out one by one, softmax of the masked,
temperature-scaled logits), never against vitlab's own output, and each check is shown to fail on a
deliberately broken case.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitlab.engine.optim import param_groups
from vitlab.errors import ConfigError
from vitlab.layers import Attention, record_attention
from vitlab.layers.lsa import LocalitySelfAttention
from vitlab.layers.spt_embed import ShiftedPatchEmbed, diagonal_shifts
from vitlab.models.vit import build_vit
from vitlab.models.vit_config import ViTConfig

TINY = dict(img_size=(16, 16), patch_size=4, num_classes=5, embed_dim=24, depth=2, num_heads=3, mlp_dim=48,
            class_token=False, global_pool="avg")


def rolled(x: torch.Tensor, di: int, dj: int) -> torch.Tensor:
    """x shifted by (di, dj) pixels (content moves down / right for positive), zeros shifted in."""
    out = torch.roll(x, shifts=(di, dj), dims=(-2, -1))
    H, W = x.shape[-2:]
    rows = torch.arange(H)[:, None] - di
    cols = torch.arange(W)[None, :] - dj
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)  # where the roll did not wrap
    return out * inside


def test_shifted_channels_are_the_four_diagonal_views() -> None:
    x = torch.randn(2, 3, 8, 8)
    s = 2
    z = diagonal_shifts(x, s)
    assert z.shape == (2, 15, 8, 8)
    # Authors' order: x, left-up, right-up, left-down, right-down neighbour views.
    expected = [x, rolled(x, s, s), rolled(x, s, -s), rolled(x, -s, s), rolled(x, -s, -s)]
    for k, e in enumerate(expected):
        torch.testing.assert_close(z[:, 3 * k : 3 * k + 3], e, rtol=0, atol=0)
    # Negative control: a wrapping roll (no zero fill) is not what the layer computes.
    assert not torch.equal(z[:, 3:6], torch.roll(x, (s, s), (-2, -1)))
    assert torch.equal(z[:, 3:6, :s, :], torch.zeros(2, 3, s, 8))  # the zero-filled border


def reference_spt_tokens(embed: ShiftedPatchEmbed, x: torch.Tensor) -> torch.Tensor:
    """The paper's Eq. 2-3 done by hand: cut each P x P patch of the 5C-channel image, flatten it as
    (row, column, channel), LayerNorm, linear."""
    s, P = embed.shift, embed.patch_size
    views = torch.cat([x, rolled(x, s, s), rolled(x, s, -s), rolled(x, -s, s), rolled(x, -s, -s)], dim=1)
    H, W = x.shape[-2:]
    tokens = []
    for i in range(0, H, P):
        for j in range(0, W, P):
            patch = views[:, :, i : i + P, j : j + P]  # (B, 5C, P, P)
            tokens.append(patch.permute(0, 2, 3, 1).reshape(x.shape[0], -1))
    flat = torch.stack(tokens, 1)  # (B, N, P * P * 5C)
    normed = F.layer_norm(flat, flat.shape[-1:], embed.norm.weight, embed.norm.bias, embed.norm.eps)
    return normed @ embed.proj.weight.T + embed.proj.bias


def test_spt_embed_matches_the_paper_by_hand() -> None:
    torch.manual_seed(0)
    embed = ShiftedPatchEmbed((8, 12), 4, 3, 16, shift=2)
    with torch.no_grad():  # non-trivial LayerNorm affine so its layout matters
        embed.norm.weight.normal_()
        embed.norm.bias.normal_()
    x = torch.randn(2, 3, 8, 12)
    out = embed(x)
    assert out.shape == (2, 6, 16)
    torch.testing.assert_close(out, reference_spt_tokens(embed, x), rtol=1e-5, atol=1e-5)
    # Negative control: flattening the patches channel-first ((c, p1, p2), F.unfold's order) differs.
    unfolded = F.unfold(diagonal_shifts(x, 2), 4, stride=4).transpose(1, 2)
    wrong = embed.proj(embed.norm(unfolded))
    assert (wrong - out).abs().max() > 1e-2


def test_spt_stem_in_the_vit_config() -> None:
    cfg = ViTConfig(**TINY, stem="spt")
    assert cfg.stem_args == {"shift": 0}
    model = build_vit(cfg)
    assert isinstance(model.patch_embed, ShiftedPatchEmbed) and model.patch_embed.shift == 2  # P // 2
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    assert ViTConfig.from_dict(cfg.to_dict()) == cfg
    assert build_vit(cfg.replace(stem_args={"shift": 1})).patch_embed.shift == 1
    with pytest.raises(ConfigError, match="stem_args.shift"):
        ViTConfig(**TINY, stem="spt", stem_args={"shift": -1}).validate()


def lsa_by_hand(layer: Attention, x: torch.Tensor, temperature: torch.Tensor, mask: bool) -> torch.Tensor:
    """softmax(mask(q k^T * tau_h)) v, then the output projection, from the layer's weights."""
    B, T, D = x.shape
    H, hd = layer.num_heads, D // layer.num_heads
    q, k, v = (x @ layer.qkv.weight.T + layer.qkv.bias).reshape(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
    logits = torch.einsum("bhid,bhjd->bhij", q, k) * temperature.view(1, H, 1, 1)
    if mask:
        logits = logits - torch.diag(torch.full((T,), float("inf")))
    out = torch.einsum("bhij,bhjd->bhid", logits.softmax(-1), v).transpose(1, 2).reshape(B, T, D)
    return out @ layer.proj.weight.T + layer.proj.bias


def test_lsa_masks_the_diagonal_and_learns_a_temperature() -> None:
    torch.manual_seed(0)
    layer = LocalitySelfAttention(24, 3).eval()
    with torch.no_grad():
        layer.temperature.copy_(torch.tensor([0.1, 0.5, 2.0]))  # per head, away from 1/sqrt(d)
    x = torch.randn(2, 7, 24)
    fused = layer(x)
    with record_attention(layer) as rec:  # the explicit path, through `attend`
        explicit = layer(x)
    maps = rec.layer(0)
    assert maps.shape == (2, 3, 7, 7)
    assert torch.equal(torch.diagonal(maps, dim1=-2, dim2=-1), torch.zeros(2, 3, 7))  # exactly zero weight
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 3, 7))
    expected = lsa_by_hand(layer, x, layer.temperature, mask=True)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(explicit, expected, rtol=1e-5, atol=1e-5)
    # Negative controls: without the mask, or with the fixed 1/sqrt(d), the by-hand result differs.
    assert (lsa_by_hand(layer, x, layer.temperature, mask=False) - fused).abs().max() > 1e-3
    assert (lsa_by_hand(layer, x, torch.full((3,), 8**-0.5), mask=True) - fused).abs().max() > 1e-3
    plain = Attention(24, 3)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "temperature"})
    with record_attention(plain) as rec:
        plain(x)
    assert torch.diagonal(rec.layer(0), dim1=-2, dim2=-1).min() > 0  # plain attention weights itself


def test_lsa_temperature_trains_without_weight_decay() -> None:
    torch.manual_seed(0)
    model = build_vit(ViTConfig(**TINY, attn="lsa"))
    layers = [m for m in model.modules() if isinstance(m, LocalitySelfAttention)]
    assert len(layers) == 2
    torch.testing.assert_close(layers[0].temperature, torch.full((3,), 8**-0.5))  # the paper's start: 1/sqrt(d)
    model.train().forward_features(torch.randn(4, 3, 16, 16)).square().sum().backward()  # the head starts at 0
    assert layers[0].temperature.grad is not None and layers[0].temperature.grad.abs().sum() > 0
    temps = {id(m.temperature) for m in layers}
    for group in param_groups(model, weight_decay=0.05):
        if any(id(p) in temps for p in group["params"]):
            assert group["weight_decay"] == 0.0
    fixed = build_vit(ViTConfig(**TINY, attn="lsa", attn_args={"learn_temperature": False}))
    assert not any(m.temperature.requires_grad for m in fixed.modules() if isinstance(m, LocalitySelfAttention))


def test_lsa_off_by_default_and_both_parts_off_is_plain_attention() -> None:
    assert ViTConfig().attn == "mhsa" and ViTConfig().stem == "patch"
    torch.manual_seed(0)
    off = LocalitySelfAttention(24, 3, mask_diagonal=False, learn_temperature=False).eval()
    plain = Attention(24, 3).eval()
    plain.load_state_dict({k: v for k, v in off.state_dict().items() if k != "temperature"})
    x = torch.randn(2, 5, 24)
    torch.testing.assert_close(off(x), plain(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        LocalitySelfAttention(24, 3)(torch.randn(1, 1, 24))


def test_conv_stem_extra_stride1_convs() -> None:
    torch.manual_seed(0)
    cfg = ViTConfig(**TINY, stem="conv", stem_args={"channels": [8, 16], "extra": 1})
    embed = build_vit(cfg).patch_embed.eval()
    x = torch.randn(2, 3, 16, 16)
    # By hand: two stride-2 convs, one stride-1 conv (each conv -> BN in eval -> ReLU), then the 1x1 projection.
    convs = [m for m in embed.stem if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in embed.stem if isinstance(m, torch.nn.BatchNorm2d)]
    assert [c.stride for c in convs] == [(2, 2), (2, 2), (1, 1)]
    h = x
    for conv, bn in zip(convs, bns):
        h = F.conv2d(h, conv.weight, stride=conv.stride, padding=1)
        h = F.relu(F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))
    expected = F.conv2d(h, embed.proj.weight, embed.proj.bias).flatten(2).transpose(1, 2)
    torch.testing.assert_close(embed(x), expected)
    assert embed(x).shape == (2, 16, 24)
    # Negative control and default: extra 0 is the older two-conv stem, whose output differs.
    plain = build_vit(ViTConfig(**TINY, stem="conv", stem_args={"channels": [8, 16]})).patch_embed
    assert len([m for m in plain.stem if isinstance(m, torch.nn.Conv2d)]) == 2
    with pytest.raises(ConfigError, match="stem_args.extra"):
        ViTConfig(**TINY, stem="conv", stem_args={"channels": [8, 16], "extra": -1}).validate()
