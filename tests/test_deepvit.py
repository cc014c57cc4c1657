"""DeepViT: re-attention numerics against a from-the-paper reference, placement, hooks, presets.

The registry-driven checks (forward, backward, reset_classifier, forward_intermediates) run for
the DeepViT presets in test_models.py; this file covers what is specific to re-attention.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import vitlab
from vitlab.errors import ConfigError
from vitlab.layers import Attention, ReAttention

RECIPE = Path(__file__).resolve().parents[1] / "vitlab" / "recipes" / "collapse_study.yaml"
from vitlab.layers.cnn_embed import CnnPatchEmbed
from vitlab.layers.reattention import HeadMixing, num_reattention_params, reattention_layers
from vitlab.models import ViTConfig
from vitlab.models.factory import build_from_description
from vitlab.weights.vitlab_format import describe
from vitlab.models.vit import Block
from vitlab.utils.flops import count_params


@functools.lru_cache(maxsize=None)
def _meta(name: str, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return vitlab.create_model(name, **kw)


def _perturb(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)


def _tiny(seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    base = dict(depth=4, attn_type="reattention")
    return vitlab.create_model("vit_pico_patch7_28", **{**base, **overrides})


# ----------------------------------------------------------------------- parameter counts
def _official_count(dim: int, depth: int, heads: int, mlp_ratio: int, reattn_blocks: int, cnn_stem: bool,
                    img: int = 224, patch: int = 16, classes: int = 1000) -> int:
    """Parameters of the authors' DeepVisionTransformer, counted module by module from their code."""
    hidden = dim * mlp_ratio
    block = (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + (dim * hidden + hidden) + (hidden * dim + dim) + 4 * dim
    reattn = heads * heads + heads + 2 * heads  # reatten_matrix (1x1 conv, bias) + var_norm (BatchNorm2d affine)
    if cnn_stem:  # PatchEmbed_CNN: conv7x7 (no bias) + BN, conv3x3 (no bias) + BN, proj k=P/2 (bias)
        embed = 3 * 64 * 49 + 2 * 64 + 64 * 64 * 9 + 2 * 64 + 64 * dim * (patch // 2) ** 2 + dim
    else:
        embed = 3 * dim * patch * patch + dim
    tokens = (img // patch) ** 2 + 1
    return embed + dim + tokens * dim + depth * block + reattn_blocks * reattn + 2 * dim + dim * classes + classes


@pytest.mark.parametrize(
    "name, expected, official",
    [
        ("deepvit_16b_patch16_224", 24_426_664, (384, 16, 12, 3, 16, False)),
        ("deepvit_24b_patch16_224", 36_261_448, (384, 24, 12, 3, 24, False)),
        ("deepvit_32b_patch16_224", 48_096_232, (384, 32, 12, 3, 32, False)),
        ("deepvit_s_patch16_224", 27_312_632, (396, 16, 12, 3, 5, True)),
        ("deepvit_l_patch16_224", 58_883_708, (420, 32, 12, 3, 12, True)),
        ("deepvit_baseline_16b_patch16_224", 24_423_784, (384, 16, 12, 3, 0, False)),
        ("deepvit_baseline_32b_patch16_224", 48_090_472, (384, 32, 12, 3, 0, False)),
    ],
)
def test_param_counts(name: str, expected: int, official: tuple) -> None:
    assert count_params(_meta(name)) == expected == _official_count(*official)


def test_paper_rounded_counts() -> None:
    """The issue's / paper's figures: 24.43M, 36.26M, 48.10M, ~27.3M, ~58.9M."""
    for name, millions in [("deepvit_16b_patch16_224", 24.43), ("deepvit_24b_patch16_224", 36.26),
                           ("deepvit_32b_patch16_224", 48.10)]:
        assert round(count_params(_meta(name)) / 1e6, 2) == millions
    assert round(count_params(_meta("deepvit_s_patch16_224")) / 1e6, 1) == 27.3
    assert round(count_params(_meta("deepvit_l_patch16_224")) / 1e6, 1) == 58.9


def test_wide_option_widens_the_hidden_layers() -> None:
    wide = _meta("deepvit_16b_patch16_224", wide=True)
    assert wide.config.embed_dim == 768 and wide.config.mlp_dim == 2304 and wide.config.num_heads == 12
    assert count_params(wide) == 96_035_368 == _official_count(768, 16, 12, 3, 16, False)
    assert count_params(_meta("deepvit_baseline_16b_patch16_224", wide=True)) == 96_035_368 - 16 * 180


def test_num_reattention_params() -> None:
    assert num_reattention_params(12, "official") == 180
    assert num_reattention_params(12, "vit-pytorch") == 168
    for mode in ("official", "vit-pytorch"):
        assert sum(p.numel() for p in HeadMixing(12, mode).parameters()) == num_reattention_params(12, mode)


# ----------------------------------------------------------------------- presets' structure
def test_deepvit_s_structure() -> None:
    model = _meta("deepvit_s_patch16_224")
    kinds = [type(b.attn) for b in model.blocks]
    assert kinds == [Attention] * 11 + [ReAttention] * 5
    assert isinstance(model.patch_embed, CnnPatchEmbed) and model.grid_size == (14, 14)
    assert all(b.scale_adjustment == 0.5 for b in model.blocks)
    for b in model.blocks[11:]:
        assert b.attn.reattend.mode == "official" and math.isclose(b.attn.reattend.scale, 33**-0.5)
    large = _meta("deepvit_l_patch16_224")
    assert [type(b.attn) for b in large.blocks] == [Attention] * 20 + [ReAttention] * 12
    assert all(b.attn.reattend.scale == 1.0 for b in large.blocks[20:])


def test_every_block_and_last_k() -> None:
    assert all(isinstance(b.attn, ReAttention) for b in _meta("deepvit_24b_patch16_224").blocks)
    assert not any(isinstance(b.attn, ReAttention) for b in _meta("deepvit_baseline_24b_patch16_224").blocks)
    model = _tiny(reattn_blocks=2)
    assert [isinstance(b.attn, ReAttention) for b in model.blocks] == [False, False, True, True]
    assert all(isinstance(a, Attention) for a in model.attention_layers) and len(model.attention_layers) == 4
    assert reattention_layers(3, 0) == [Attention] * 3
    assert len(reattention_layers(2, 5)) == 2  # more than depth: every block
    with pytest.raises(ConfigError, match="reattn_blocks"):
        _tiny(reattn_blocks=-1)


def test_init_identity_and_random() -> None:
    eye = torch.eye(4)
    official = HeadMixing(4, "official", "identity")
    assert torch.equal(official.theta.weight[:, :, 0, 0], eye) and not official.theta.bias.any()
    vp = HeadMixing(4, "vit-pytorch", "identity")
    assert torch.equal(vp.theta, eye)
    torch.manual_seed(0)
    assert not torch.equal(HeadMixing(4, "official", "random").theta.weight[:, :, 0, 0], eye)
    assert not torch.equal(HeadMixing(4, "vit-pytorch", "random").theta, eye)
    # The ViT's weight init (truncated normal on Linear layers) must not overwrite Theta.
    model = _tiny(reattn_mode="vit-pytorch")
    assert torch.equal(model.blocks[0].attn.reattend.theta, eye)
    with pytest.raises(ValueError):
        HeadMixing(4, "conv")  # type: ignore[arg-type]


# ----------------------------------------------------------------------- numerics
def _reference_reattention(layer: ReAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the paper / authors' definitions, reading only parameters: (out, maps before, maps after)."""
    B, T, D = x.shape
    H = layer.num_heads
    hd = D // H
    qkv = x @ layer.qkv.weight.T + layer.qkv.bias
    q, k, v = (t.reshape(B, T, H, hd).transpose(1, 2) for t in qkv.split(D, dim=-1))
    before = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
    mix = layer.reattend
    if mix.mode == "official":  # eval-mode BatchNorm over heads with running statistics
        w, b = mix.theta.weight[:, :, 0, 0], mix.theta.bias
        mixed = torch.einsum("gh,bhij->bgij", w, before) + b[None, :, None, None]
        bn = mix.norm
        mean, var = bn.running_mean[None, :, None, None], bn.running_var[None, :, None, None]
        w_bn, b_bn = bn.weight[None, :, None, None], bn.bias[None, :, None, None]
        after = (mixed - mean) / torch.sqrt(var + bn.eps) * w_bn + b_bn
    else:  # LayerNorm over the head axis at every (i, j)
        mixed = torch.einsum("hg,bhij->bgij", mix.theta, before)
        mu = mixed.mean(1, keepdim=True)
        var = ((mixed - mu) ** 2).mean(1, keepdim=True)
        ln = mix.norm
        after = (mixed - mu) / torch.sqrt(var + ln.eps) * ln.weight[None, :, None, None] + ln.bias[None, :, None, None]
    after = after * mix.scale
    out = (after @ v).transpose(1, 2).reshape(B, T, D)
    return out @ layer.proj.weight.T + layer.proj.bias, before, after


@pytest.mark.parametrize("mode", ["official", "vit-pytorch"])
@pytest.mark.parametrize("scale", [False, True])
def test_matches_reference_float64(mode: str, scale: bool) -> None:
    torch.manual_seed(0)
    layer = ReAttention(32, 4, mode=mode, init="random", scale=scale).double().eval()
    _perturb(layer, seed=1)
    if mode == "official":  # non-trivial running statistics
        layer.reattend.norm.running_mean.uniform_(-0.1, 0.1)
        layer.reattend.norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 9, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    seen: dict[str, torch.Tensor] = {}
    h1 = layer.attend.register_forward_hook(lambda m, i, o: seen.__setitem__("before", o))
    h2 = layer.reattend.register_forward_hook(lambda m, i, o: seen.__setitem__("after", o))
    with torch.no_grad():
        out = layer(x)
    h1.remove(), h2.remove()
    expected, before, after = _reference_reattention(layer, x)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(seen["before"], before, atol=1e-12, rtol=0)
    torch.testing.assert_close(seen["after"], after, atol=1e-12, rtol=0)
    torch.testing.assert_close(before.sum(-1), torch.ones(3, 4, 9, dtype=torch.float64))
    assert not torch.allclose(after.sum(-1), torch.ones(3, 4, 9, dtype=torch.float64))  # mixed maps are not stochastic


def test_official_identity_init_starts_as_plain_attention() -> None:
    """Theta = I and a fresh eval-mode BatchNorm: re-attention = attention / sqrt(1 + eps)."""
    torch.manual_seed(0)
    plain = Attention(32, 4).eval()
    re = ReAttention(32, 4, mode="official", init="identity").eval()
    re.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        torch.testing.assert_close(re(x), plain(x) / math.sqrt(1 + 1e-5), atol=1e-6, rtol=1e-5)
        re.reattend.reset_theta("random")
        assert not torch.allclose(re(x), plain(x) / math.sqrt(1 + 1e-5), atol=1e-3)


def test_reattention_never_takes_the_fused_path() -> None:
    torch.manual_seed(0)
    layer = ReAttention(32, 4, mode="vit-pytorch", init="random").eval()
    assert layer.fused and not layer.wants_maps()
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _reference_reattention(layer, x)[0], atol=1e-5, rtol=1e-5)


def test_intermediates_capture_before_and_after() -> None:
    model = _tiny(reattn_blocks=2, reattn_init="random").eval()
    _perturb(model, seed=3)
    x = torch.randn(2, 1, 28, 28)
    after = {}
    handles = [b.attn.reattend.register_forward_hook(lambda m, i, o, k=k: after.__setitem__(k, o))
               for k, b in enumerate(model.blocks) if isinstance(b.attn, ReAttention)]
    with torch.no_grad():
        out = model.forward_intermediates(x, return_attn=True)
        logits = model(x)
    for h in handles:
        h.remove()
    torch.testing.assert_close(out["logits"], logits, atol=1e-5, rtol=1e-5)
    assert sorted(after) == [2, 3] and len(out["attn"]) == 4
    for k in (2, 3):  # what attend shows, re-attended, is what reattend shows
        torch.testing.assert_close(model.blocks[k].attn.reattend(out["attn"][k]), after[k])
        torch.testing.assert_close(out["attn"][k].sum(-1), torch.ones(2, 4, 17), atol=1e-5, rtol=0)


def test_analysis_capture_sees_maps_before_and_after_mixing() -> None:
    from vitlab.analysis.capture import capture_attention

    model = _tiny(reattn_blocks=2, reattn_init="random").eval()
    _perturb(model, seed=7)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad(), capture_attention(model) as cap:
        model(x)
    assert len(cap) == 4 and cap.mixed[0] is None and cap.mixed[1] is None
    for k in (2, 3):
        before, after = cap.layer(k, "softmax"), cap.layer(k, "mixed")
        torch.testing.assert_close(before.sum(-1), torch.ones(2, 4, 17), atol=1e-5, rtol=0)
        torch.testing.assert_close(after, model.blocks[k].attn.reattend(before))
        torch.testing.assert_close(cap.effective()[k], after)


def test_scale_adjustment_block() -> None:
    """The authors' block: x + f(LN(s x)) / s for both branches."""
    torch.manual_seed(0)
    block = Block(32, 4, 64, scale_adjustment=0.5).eval()
    _perturb(block, seed=4)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        y = x + block.attn(block.norm1(x * 0.5)) / 0.5
        y = y + block.mlp(block.norm2(y * 0.5)) / 0.5
        torch.testing.assert_close(block(x), y)
        plain = copy.deepcopy(block)
        plain.scale_adjustment = 1.0
        assert not torch.allclose(block(x), plain(x))


def test_train_step_updates_theta_and_norm() -> None:
    model = _tiny(reattn_init="identity")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mix = model.blocks[-1].attn.reattend
    w0 = mix.theta.weight.detach().clone()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    model.reset_classifier(10)
    torch.nn.init.normal_(model.head.weight, std=0.1)
    F.cross_entropy(model(x), y).backward()
    assert mix.theta.weight.grad.abs().sum() > 0 and mix.norm.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(mix.theta.weight, w0)
    assert mix.norm.num_batches_tracked.item() == 1  # BatchNorm over heads updated its statistics


# ----------------------------------------------------------------------- config and checkpoints
def test_config_round_trip_and_rebuild() -> None:
    model = _tiny(reattn_mode="vit-pytorch", reattn_blocks=3, reattn_scale=True, scale_adjustment=0.5)
    cfg = model.config
    assert ViTConfig.from_dict(cfg.to_dict()) == cfg
    again = build_from_description(describe(model))
    assert [type(b.attn) for b in again.blocks] == [type(b.attn) for b in model.blocks]
    again.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model.eval()(x))


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        _tiny(reattn_mode="conv")
    with pytest.raises(ConfigError, match="scale_adjustment"):
        _tiny(scale_adjustment=0.0)
    with pytest.raises(ConfigError, match="even"):
        vitlab.create_model("vit_pico_patch7_28", stem="cnn")


# ----------------------------------------------------------------------- the collapse study
def test_measure_identical_blocks_are_all_similar() -> None:
    """Blocks with the same attention weights and no residual updates see identical maps: M = 1."""
    from vitlab.studies.collapse_study import measure

    model = _tiny(depth=3, attn_type="mhsa").eval()
    _perturb(model, seed=5, std=0.1)
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.qkv.load_state_dict(model.blocks[0].attn.qkv.state_dict())
            blk.attn.proj.weight.zero_(), blk.attn.proj.bias.zero_()
            blk.mlp.fc2.weight.zero_(), blk.mlp.fc2.bias.zero_()
            blk.norm1.load_state_dict(model.blocks[0].norm1.state_dict())
    out = measure(model, torch.randn(6, 1, 28, 28), threshold=0.8, batch=4)
    torch.testing.assert_close(torch.tensor(out["softmax"]["matrix"]), torch.ones(3, 3), atol=1e-4, rtol=0)
    assert out["softmax"]["num_similar"] == 3 and out["softmax"]["adjacent"] == pytest.approx([1, 1], abs=1e-4)
    assert out["mixed"] == out["softmax"]


def test_measure_reads_mixed_maps_of_reattention() -> None:
    from vitlab.studies.collapse_study import measure

    model = _tiny(depth=3, reattn_blocks=1, reattn_init="random").eval()
    _perturb(model, seed=6, std=0.3)
    out = measure(model, torch.randn(4, 1, 28, 28), batch=4)
    m, s = torch.tensor(out["mixed"]["matrix"]), torch.tensor(out["softmax"]["matrix"])
    torch.testing.assert_close(m[:2, :2], s[:2, :2])  # plain blocks: the same maps
    assert not torch.allclose(m[2], s[2], atol=1e-3)  # the re-attention block: its mixed maps
    torch.testing.assert_close(torch.diagonal(m), torch.ones(3), atol=1e-5, rtol=0)


def test_recipe_and_report(tmp_path) -> None:
    from vitlab.studies.collapse_plots import plot_study
    from vitlab.studies.collapse_study import load_recipe, results_table, summarize

    study, train = load_recipe(RECIPE)
    assert study.depths == (8, 16, 24) and set(study.variants) == {"self-attention", "re-attention"}
    assert train["model_args"]["embed_dim"] == 64
    smoke, smoke_train = load_recipe(RECIPE, smoke=True)
    assert smoke.depths == (2, 3) and smoke_train["epochs"] == 1 and smoke_train["model_args"]["embed_dim"] == 64
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: {depth: [3]}\n")
    with pytest.raises(ConfigError, match="depth"):
        load_recipe(bad)
    sim = torch.tensor([[1.0, 0.9, 0.2], [0.9, 1.0, 0.5], [0.2, 0.5, 1.0]])
    summary = summarize(sim, 0.8)
    assert summary["similar_blocks"] == [0, 1] and summary["adjacent"] == [0.9, 0.5]
    runs = [{"variant": v, "depth": 3, "val_top1": 90.0, "softmax": summary, "mixed": summary, "init": summary,
             "centered": summary} for v in ("self-attention", "re-attention")]
    results = {"threshold": 0.8, "runs": runs}
    assert results_table(results).count("\n") == 4
    paths = plot_study(results, tmp_path / "figures")
    assert all(p.stat().st_size > 1000 for p in paths)
