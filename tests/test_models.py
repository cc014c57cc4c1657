"""The ViT family: every registered model through the common face, plus numerics and options.

Big variants are built with their real width, heads and patch size but only 2 blocks and a
rectangular 2x3-patch input, which exercises the same code at a fraction of the compute.
"""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F

import vitlab
from vitlab.errors import ConfigError
from vitlab.layers import Attention, sincos_2d
from vitlab.models import VisionTransformer
from vitlab.utils.flops import count_params

SMALL_PARAMS = 3_000_000
INTERMEDIATE_KEYS = {
    "indices", "embed", "blocks", "attn", "features", "pre_logits", "logits", "grid_size", "num_prefix_tokens",
}
ALL_MODELS = vitlab.list_models()


@functools.lru_cache(maxsize=None)
def _meta(name: str) -> VisionTransformer:
    with torch.device("meta"):
        return vitlab.create_model(name)


@functools.lru_cache(maxsize=None)
def _built(name: str) -> VisionTransformer:
    meta = _meta(name)
    torch.manual_seed(0)
    if count_params(meta) < SMALL_PARAMS:
        return vitlab.create_model(name)
    p = meta.config.patch_size
    return vitlab.create_model(name, depth=2, img_size=(2 * p, 3 * p))


def _fresh(name: str) -> VisionTransformer:
    """A private copy of the (cached) test-size model, with a random head so logits carry signal."""
    model = copy.deepcopy(_built(name))
    _randomize_head(model, seed=1)
    return model


def _randomize_head(model: VisionTransformer, seed: int, std: float = 0.1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.head.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def _input(model: VisionTransformer, batch: int = 2, seed: int = 0) -> torch.Tensor:
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.in_chans, *cfg.img_size, generator=gen)


def _pico(seed: int = 0, **overrides) -> VisionTransformer:
    torch.manual_seed(seed)
    model = vitlab.create_model("vit_pico_patch4_28", **overrides)
    if isinstance(model.head, torch.nn.Linear):
        _randomize_head(model, seed=seed + 1)
    return model


# ----------------------------------------------------------------------- every registered model
def test_registry_is_not_empty() -> None:
    assert len(ALL_MODELS) >= 20
    assert any(count_params(_meta(n)) < SMALL_PARAMS for n in ALL_MODELS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward(name: str) -> None:
    model = _fresh(name)
    model.train()
    x = _input(model)
    logits = model(x)
    assert logits.shape == (2, model.config.num_classes)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    params = dict(model.named_parameters())
    no_grad = [k for k, p in params.items() if p.grad is None]
    assert not no_grad, f"no gradient reached {no_grad}"
    zero = [k for k, p in params.items() if not p.grad.abs().sum() > 0]
    assert not zero, f"zero gradient for {zero}"
    assert all(torch.isfinite(p.grad).all() for p in params.values())


@pytest.mark.parametrize("name", ALL_MODELS)
def test_reset_classifier(name: str) -> None:
    model = _fresh(name).eval()
    x = _input(model)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    model.reset_classifier(5)
    assert model.config.num_classes == 5 and model.num_classes == 5
    with torch.no_grad():
        assert model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert model.config.num_classes == 0
    with torch.no_grad():
        features = model(x)
    assert features.shape == (2, model.num_features)
    torch.testing.assert_close(features, pooled)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_intermediates(name: str) -> None:
    model = _fresh(name).eval()
    cfg = model.config
    x = _input(model)
    with torch.no_grad():
        out = model.forward_intermediates(x, return_attn=True)
        logits = model(x)
    assert set(out) == INTERMEDIATE_KEYS
    gh, gw = cfg.img_size[0] // cfg.patch_size, cfg.img_size[1] // cfg.patch_size
    prefix = int(cfg.class_token) + int(cfg.dist_token) + cfg.reg_tokens
    tokens, depth = prefix + gh * gw, cfg.depth
    assert out["grid_size"] == (gh, gw) and out["num_prefix_tokens"] == prefix
    assert out["indices"] == list(range(depth))
    assert out["embed"].shape == (2, tokens, cfg.embed_dim)
    assert len(out["blocks"]) == depth and len(out["attn"]) == depth
    for block, attn in zip(out["blocks"], out["attn"]):
        assert block.shape == (2, tokens, cfg.embed_dim)
        assert attn.shape == (2, cfg.num_heads, tokens, tokens)
        assert (attn >= 0).all()
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, cfg.num_heads, tokens), atol=1e-5, rtol=0)
    assert out["features"].shape == (2, tokens, cfg.embed_dim)
    torch.testing.assert_close(out["features"], model.norm(out["blocks"][-1]))
    assert out["pre_logits"].shape == (2, model.num_features)
    assert out["logits"].shape == (2, cfg.num_classes)
    torch.testing.assert_close(out["logits"], logits, atol=1e-5, rtol=1e-5)
    # The capture hooks are removed afterwards: the fused path is back.
    assert not any(a.wants_maps() for a in model.attention_layers)


# ----------------------------------------------------------------------- forward_intermediates
@pytest.mark.parametrize(
    "indices, expected",
    [(None, [0, 1, 2, 3, 4, 5]), (1, [5]), (3, [3, 4, 5]), ([0, 2], [0, 2]), ([-1], [5]),
     ([-1, 0, 5], [0, 5]), ((1, -2), [1, 4])],
)
def test_intermediates_indices(indices, expected: list[int]) -> None:
    model = _pico().eval()
    x = _input(model)
    with torch.no_grad():
        full = model.forward_intermediates(x, return_attn=True)
        out = model.forward_intermediates(x, indices=indices, return_attn=True)
    assert out["indices"] == expected
    assert len(out["blocks"]) == len(out["attn"]) == len(expected)
    for k, i in enumerate(expected):
        torch.testing.assert_close(out["blocks"][k], full["blocks"][i])
        torch.testing.assert_close(out["attn"][k], full["attn"][i])


def test_intermediates_without_attn() -> None:
    model = _pico().eval()
    with torch.no_grad():
        out = model.forward_intermediates(_input(model), indices=2)
    assert out["attn"] == [] and out["indices"] == [4, 5]


@pytest.mark.parametrize("indices", [0, 7, [6], [-7]])
def test_intermediates_bad_indices(indices) -> None:
    model = _pico()
    with pytest.raises(ValueError):
        model.forward_intermediates(_input(model), indices=indices)


# ----------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize(
    "name, expected",
    [
        ("vit_tiny_patch16_224", 5_717_416),
        ("vit_base_patch16_224", 86_567_656),
        ("vit_base_patch32_224", 88_224_232),
        ("vit_large_patch16_224", 304_326_632),
        ("vit_huge_patch14_224", 632_045_800),
    ],
)
def test_param_counts(name: str, expected: int) -> None:
    assert count_params(_meta(name)) == expected


def test_param_counts_match_timm() -> None:
    timm = pytest.importorskip("timm")
    shared = [n for n in ALL_MODELS if timm.is_model(n)]
    assert len(shared) >= 10
    for name in shared:
        with torch.device("meta"):
            theirs = timm.create_model(name, pretrained=False, num_classes=1000)
        # a no_embed_class table keeps zero rows for the prefix tokens in vitlab (never added)
        extra = theirs.num_prefix_tokens * theirs.embed_dim if getattr(theirs, "no_embed_class", False) else 0
        assert count_params(_meta(name)) == count_params(theirs) + extra, name


# ----------------------------------------------------------------------- attention paths
def _set_fused(model: torch.nn.Module, fused: bool) -> None:
    for m in model.modules():
        if isinstance(m, Attention):
            m.fused = fused


@pytest.mark.parametrize("name", ["vit_pico_patch4_28", "vit_tiny_patch16_224", "vit_base_patch32_224"])
def test_fused_equals_explicit(name: str) -> None:
    model = _fresh(name).eval()
    x = _input(model)
    with torch.no_grad():
        fused_logits, fused_feats = model(x), model.forward_features(x)
        _set_fused(model, False)
        assert all(a.wants_maps() for a in model.attention_layers)
        explicit_logits, explicit_feats = model(x), model.forward_features(x)
    torch.testing.assert_close(explicit_feats, fused_feats, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit_logits, fused_logits, atol=1e-5, rtol=1e-5)
    assert fused_logits.abs().max() > 1e-3  # the comparison is not between zeros


def test_hook_on_attend_takes_explicit_path() -> None:
    model = _pico().eval()
    x = _input(model)
    with torch.no_grad():
        fused = model(x)
    seen: list[tuple[int, ...]] = []
    handles = [a.attend.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
               for a in model.attention_layers]
    try:
        with torch.no_grad():
            hooked = model(x)
    finally:
        for h in handles:
            h.remove()
    assert seen == [(2, 4, 50, 50)] * 6
    torch.testing.assert_close(hooked, fused, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------- input size
def test_set_input_size_same_is_identity() -> None:
    model = _pico().eval()
    x = _input(model)
    pos = model.pos_embed.detach().clone()
    with torch.no_grad():
        before = model(x)
    model.set_input_size(28)
    assert torch.equal(model.pos_embed, pos)
    assert model.config.img_size == (28, 28) and model.grid_size == (7, 7)
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_set_input_size_bigger() -> None:
    model = _pico().eval()
    model.set_input_size((32, 40))
    assert model.grid_size == (8, 10)
    assert model.config.img_size == (32, 40)
    assert model.pos_embed.shape == (1, 1 + 80, 128)
    assert model.pos_embed.requires_grad
    with torch.no_grad():
        out = model(torch.randn(2, 1, 32, 40))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    with pytest.raises(ValueError):  # the old size is no longer accepted
        model(torch.randn(2, 1, 28, 28))


def test_set_input_size_not_divisible_leaves_model_unchanged() -> None:
    model = _pico().eval()
    x = _input(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config = model.config
    with torch.no_grad():
        before = model(x)
    with pytest.raises(ValueError, match="30"):
        model.set_input_size(30)
    assert model.config == config
    assert model.grid_size == (7, 7) and model.patch_embed.img_size == (28, 28)
    after = model.state_dict()
    assert set(after) == set(state) and all(torch.equal(after[k], state[k]) for k in state)
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_rectangular_input() -> None:
    model = _pico(img_size=(28, 44)).eval()
    x = torch.randn(2, 1, 28, 44)
    with torch.no_grad():
        out = model.forward_intermediates(x, return_attn=True)
    assert out["grid_size"] == (7, 11)
    assert out["attn"][0].shape == (2, 4, 1 + 77, 1 + 77)
    assert out["logits"].shape == (2, 10)


def test_wrong_input_size_is_a_clear_error() -> None:
    model = _pico()
    with pytest.raises(ValueError, match="set_input_size"):
        model(torch.randn(1, 1, 32, 32))


# ----------------------------------------------------------------------- options
def test_sincos_pos_embed() -> None:
    model = _pico(pos_embed="sincos").eval()
    assert model.pos_embed is None
    assert "pos_embed_fixed" not in model.state_dict()  # derived, not stored
    expected = torch.cat([torch.zeros(1, 128), sincos_2d((7, 7), 128)])[None]
    torch.testing.assert_close(model.pos_embed_fixed, expected)
    with torch.no_grad():
        assert torch.isfinite(model(_input(model))).all()
    model.set_input_size(32)
    torch.testing.assert_close(model.pos_embed_fixed[0, 1:], sincos_2d((8, 8), 128))
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_avg_pool_without_class_token() -> None:
    model = _pico(global_pool="avg", class_token=False).eval()
    assert model.cls_token is None and model.num_prefix_tokens == 0
    assert model.pos_embed.shape == (1, 49, 128)
    x = _input(model)
    with torch.no_grad():
        out = model.forward_intermediates(x, return_attn=True)
        logits = model(x)
    assert out["features"].shape == (2, 49, 128) and out["attn"][0].shape == (2, 4, 49, 49)
    torch.testing.assert_close(out["pre_logits"], out["features"].mean(1))
    torch.testing.assert_close(logits, out["logits"], atol=1e-5, rtol=1e-5)


def test_avg_pool_with_fc_norm_and_representation() -> None:
    model = _pico(global_pool="avg", fc_norm=True, representation_size=64).eval()
    assert isinstance(model.norm, torch.nn.Identity)
    assert model.num_features == 64
    with torch.no_grad():
        feats = model.forward_features(_input(model))
        pooled = model.forward_head(feats, pre_logits=True)
    expected = model.pre_logits(model.fc_norm(feats[:, 1:].mean(1)))
    torch.testing.assert_close(pooled, expected)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(_input(model)).shape == (2, 64)


def test_dropout_and_drop_path_only_in_train_mode() -> None:
    plain = _pico(seed=3).eval()
    noisy = _pico(seed=3, drop_rate=0.2, attn_drop_rate=0.1, drop_path_rate=0.3, head_drop_rate=0.2)
    x = _input(plain)
    with torch.no_grad():
        reference = plain(x)
        noisy.eval()
        torch.testing.assert_close(noisy(x), reference)  # same weights; no randomness in eval
        torch.testing.assert_close(noisy(x), reference)
        noisy.train()
        torch.manual_seed(0)
        first = noisy(x)
        second = noisy(x)
    assert not torch.allclose(first, reference)
    assert not torch.allclose(first, second)


def test_drop_path_rises_linearly() -> None:
    model = _pico(drop_path_rate=0.5)
    rates = [blk.drop_path1.drop_prob for blk in model.blocks]
    assert rates[0] == 0.0 and math.isclose(rates[-1], 0.5)
    assert rates == sorted(rates)


def test_in_chans_one() -> None:
    torch.manual_seed(0)
    model = vitlab.create_model("vit_tiny_patch16_224", in_chans=1, depth=2, img_size=32, num_classes=4)
    assert model.patch_embed.proj.weight.shape == (192, 1, 16, 16)
    assert model.config.mean == (0.5,) and model.config.std == (0.5,)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)


def test_conv_stem_downsamples_to_the_grid() -> None:
    model = vitlab.create_model("vit_pico_convstem_patch4_28")
    assert model.grid_size == (7, 7)
    assert model.patch_embed(torch.randn(2, 1, 28, 28)).shape == (2, 49, 128)
    with pytest.raises(ConfigError, match="stem_channels"):
        vitlab.create_model("vit_pico_convstem_patch4_28", stem_channels=(32,))


# ----------------------------------------------------------------------- numerics
# (the forward against a reference written from the paper: tests/test_vit_reference.py)
def test_gelu_tanh_option_changes_numerics() -> None:
    exact = _pico(seed=0).eval()
    tanh = _pico(seed=0, act="gelu_tanh").eval()
    x = _input(exact)
    with torch.no_grad():
        a, b = exact(x), tanh(x)
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)
    assert isinstance(tanh.blocks[0].mlp.act, torch.nn.GELU) and tanh.blocks[0].mlp.act.approximate == "tanh"


def test_init_is_seeded_and_head_is_zero() -> None:
    torch.manual_seed(5)
    a = vitlab.create_model("vit_pico_patch7_28")
    torch.manual_seed(5)
    b = vitlab.create_model("vit_pico_patch7_28")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not a.head.weight.any() and not a.head.bias.any()
    assert F.linear(torch.ones(1, 128), a.head.weight).abs().sum() == 0


def test_register_tokens_are_not_decayed_and_sit_in_layer_zero() -> None:
    """timm exempts reg_token from weight decay; layer decay puts it (and norm_pre) with the embeddings."""
    from vitlab.engine.optim import layer_id, param_groups

    model = vitlab.create_model("vit_pico_patch4_32", reg_tokens=4, num_classes=3)
    groups = param_groups(model, weight_decay=0.05)
    reg = model.reg_token
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay_of[id(reg)] == 0.0
    assert layer_id("reg_token", 12) == 0 and layer_id("norm_pre.weight", 12) == 0
    assert layer_id("blocks.3.attn.qkv.weight", 12) == 4  # control: a block parameter is not layer 0


def test_presets_crop_as_timms_default_weights() -> None:
    """A preset's eval crop and interpolation are those of timm's default pretrained_cfg (0.9 at 224, 1.0 at 384)."""
    timm_models = pytest.importorskip("timm.models")
    checked = 0
    for name in vitlab.list_models():
        theirs = timm_models.get_pretrained_cfg(name)
        if theirs is None:
            continue
        with torch.device("meta"):
            cfg = vitlab.create_model(name).config
        assert (cfg.crop_pct, cfg.interpolation) == (theirs.crop_pct, theirs.interpolation), name
        checked += 1
    assert checked >= 20  # the check ran over the ViT family, not over nothing
