"""Analyses on models with extra prefix tokens (registers, DeiT's distillation token), and high-norm outliers.

Analytic cases on hand-built attention, negative controls that read the tokens as if there were one
prefix token, timm as the peer (its own token count and attention), and planted high-norm tokens.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from vitlab.analysis import (AnalysisOptions, TokenLayout, attention_rollout, attention_share, collect_attention,
                             layout_of, mean_attention_distance, outlier_mask, query_maps, rollout_saliency,
                             rollout_share, token_norms)
from vitlab.analysis.outliers import reference_norm
from vitlab.api import create_model
from vitlab.cli.main import main
from vitlab.errors import ConfigError
from vitlab.weights.vitlab_format import save_weights

REG = TokenLayout(num_prefix=5, grid=(2, 3), patch_size=16, num_registers=4)  # [cls][reg x 4][6 patches]
T = REG.num_tokens  # 11


def tiny(**kw) -> nn.Module:
    torch.manual_seed(0)
    return create_model("vit_pico_patch4_28", depth=3, embed_dim=32, num_heads=2, mlp_dim=64, num_classes=3, **kw)


def hand_built(patch_pattern: torch.Tensor, to_registers: float) -> torch.Tensor:
    """(1, 1, T, T): every query puts ``to_registers`` on the registers (evenly) and the rest on ``patch_pattern``."""
    a = torch.zeros(1, 1, T, T, dtype=torch.float64)
    a[..., 1:5] = to_registers / 4
    a[..., 5:] = (1 - to_registers) * patch_pattern / patch_pattern.sum()
    return a


# ----------------------------------------------------------------------------- layout
def test_layout_kinds_are_read_from_the_model() -> None:
    assert REG.groups() == {"class": slice(0, 1), "registers": slice(1, 5), "patches": slice(5, 11)}
    assert TokenLayout(2, (2, 2), 4).groups() == {"class": slice(0, 1), "dist": slice(1, 2), "patches": slice(2, 6)}
    no_cls = TokenLayout(4, (2, 2), 4, num_registers=4)
    assert no_cls.class_token is False and list(no_cls.groups()) == ["registers", "patches"]
    with pytest.raises(ConfigError, match="do not fit"):
        TokenLayout(2, (2, 2), 4, num_registers=3)
    with pytest.raises(ConfigError, match="class token does not fit"):
        TokenLayout(4, (2, 2), 4, class_token=True, num_registers=4)
    reg = layout_of(tiny(reg_tokens=4))
    assert (reg.num_prefix, reg.num_registers, reg.class_token) == (5, 4, True)
    gap = layout_of(tiny(reg_tokens=4, class_token=False, global_pool="avg"))
    assert (gap.num_prefix, gap.num_registers, gap.class_token) == (4, 4, False)
    deit = layout_of(tiny(dist_token=True))
    assert (deit.num_prefix, deit.num_registers, list(deit.groups())) == (2, 0, ["class", "dist", "patches"])


# ----------------------------------------------------------------------------- maps
def test_class_map_reads_the_patch_columns_past_the_registers() -> None:
    pattern = torch.arange(1.0, 7.0, dtype=torch.float64)
    a = hand_built(pattern, to_registers=0.6)
    raw = query_maps(a, REG)
    torch.testing.assert_close(raw.flatten(), 0.4 * pattern / pattern.sum())  # not renormalised: sums to 0.4
    torch.testing.assert_close(query_maps(a, REG, renormalize=True).flatten(), pattern / pattern.sum())
    # Negative control: code that assumes one prefix token reads registers as the first patches.
    hard_coded_one = a[:, :, 0, 1:1 + REG.num_patches].reshape(1, 1, 2, 3)
    assert not torch.allclose(hard_coded_one, raw)


def test_map_without_a_class_token_averages_the_patch_queries() -> None:
    layout = TokenLayout(4, (2, 3), 16, num_registers=4)  # [reg x 4][6 patches], mean-pooled
    a = torch.zeros(1, 1, 10, 10, dtype=torch.float64)
    a[:, :, :4, 4] = 1.0  # register queries all look at patch 0: must not count
    a[:, :, 4:, 9] = 1.0  # patch queries all look at patch 5
    expect = torch.zeros(6, dtype=torch.float64)
    expect[5] = 1.0
    torch.testing.assert_close(query_maps(a, layout).flatten(), expect)
    assert query_maps(a, TokenLayout(4, (2, 3), 16, num_registers=3)).flatten()[0] == 1.0  # register 0 as "class"


# ----------------------------------------------------------------------------- distance
def test_mean_distance_counts_patch_to_patch_pairs_only() -> None:
    a = hand_built(torch.ones(6, dtype=torch.float64), to_registers=0.5)  # half to registers, half uniform on patches
    cells = [(r, c) for r in range(2) for c in range(3)]
    uniform = sum(16 * math.dist(p, q) for p in cells for q in cells) / 36
    torch.testing.assert_close(mean_attention_distance(a, REG), torch.tensor([[uniform]], dtype=torch.float64))
    torch.testing.assert_close(mean_attention_distance(a, REG, "zero"), torch.tensor([[uniform / 2]],
                                                                                     dtype=torch.float64))
    # Each patch looks at itself and the registers, the registers at each other: distance 0 over patches.
    local = torch.zeros(1, 1, T, T, dtype=torch.float64)
    local[..., :5, 1:5] = 0.25
    local[..., 5:, 1:5] = 0.125
    local[..., 5:, 5:] = 0.5 * torch.eye(6, dtype=torch.float64)
    assert mean_attention_distance(local, REG).abs().max() == 0
    # Negative control: with one prefix token assumed, registers become queries and keys of the grid.
    b = local[..., 1:1 + 6, 1:1 + 6]
    wrong = float(((b / b.sum(-1, keepdim=True)) * REG.patch_distances()).sum(-1).mean())
    assert wrong > 10.0
    with pytest.raises(ConfigError, match="does not fit"):
        mean_attention_distance(a, TokenLayout(1, (2, 3), 16))


# ----------------------------------------------------------------------------- rollout and shares
def test_rollout_of_identity_attention_draws_on_no_patch() -> None:
    eye = torch.eye(T, dtype=torch.float64).expand(2, 3, T, T)
    roll = attention_rollout([eye, eye])
    torch.testing.assert_close(roll, eye[:, 0])
    assert rollout_saliency(roll, REG).abs().max() == 0
    share = rollout_share(roll, REG)
    torch.testing.assert_close(share["class"], torch.ones(2, dtype=torch.float64))
    assert share["registers"].abs().max() == 0 and share["patches"].abs().max() == 0


def test_rollout_through_registers_and_the_saliency_over_patches() -> None:
    # One layer in which every token attends only to the registers: rollout = (A + I) / 2.
    a = torch.zeros(1, 1, T, T, dtype=torch.float64)
    a[..., 1:5] = 0.25
    roll = attention_rollout([a])
    share = rollout_share(roll, REG)
    torch.testing.assert_close(share["class"], torch.tensor([0.5], dtype=torch.float64))
    torch.testing.assert_close(share["registers"], torch.tensor([0.5], dtype=torch.float64))
    assert rollout_saliency(roll, REG).abs().max() == 0  # no patch is drawn on
    assert roll[0, 0, 1:7].abs().max() > 0  # what a hard-coded 1 would have drawn as "patches"


def test_attention_share_per_token_kind() -> None:
    a = hand_built(torch.ones(6, dtype=torch.float64), to_registers=0.3)
    a[:, :, 0] = 0.0
    a[:, :, 0, 0] = 1.0  # the class token looks at itself only
    share = attention_share(a, REG)
    torch.testing.assert_close(share["registers"], torch.tensor([[0.3]], dtype=torch.float64))
    torch.testing.assert_close(share["patches"], torch.tensor([[0.7]], dtype=torch.float64))
    assert share["class"].abs().max() == 0
    cls = attention_share(a, REG, "class")
    assert float(cls["class"]) == 1.0 and float(cls["registers"]) == 0.0
    with pytest.raises(ConfigError, match="no class token"):
        attention_share(a[..., 1:, 1:], TokenLayout(4, (2, 3), 16, num_registers=4), "class")


def test_runner_reports_register_shares_on_a_register_model() -> None:
    model = tiny(reg_tokens=4)
    stats = collect_attention(model, [torch.randn(2, 1, 28, 28)], AnalysisOptions(show=1))
    s = stats.summary()
    assert s["num_register_tokens"] == 4 and s["token_kinds"] == ["class", "registers", "patches"]
    for which in ("from_patches", "from_class"):
        per_layer = torch.tensor([s["attention_share"][which][k] for k in s["token_kinds"]])  # (G, L)
        torch.testing.assert_close(per_layer.sum(0), torch.ones(3), rtol=0, atol=1e-5)
        assert (per_layer[1] > 0).all()  # registers do receive attention
    assert stats.cls_maps.shape == (1, 3, 2, 7, 7) and stats.saliency.shape == (2, 7, 7)


def test_timm_register_model_as_the_peer(tmp_path: Path) -> None:
    """timm says how many prefix tokens it has and gives its maps; distance and maps follow from those alone."""
    timm_vit = pytest.importorskip("timm.models.vision_transformer")
    from safetensors.torch import save_file

    from vitlab.weights import import_weights

    torch.manual_seed(0)
    theirs = timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3,
                                        reg_tokens=4).eval()
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(tmp_path / "reg.safetensors"))
    ours = import_weights(tmp_path / "reg.safetensors", "timm", num_heads=2, img_size=32, global_pool="token").model
    maps: list[torch.Tensor] = []
    norms: list[torch.Tensor] = []
    for blk in theirs.blocks:
        blk.attn.fused_attn = False
        blk.attn.attn_drop.register_forward_pre_hook(lambda m, a: maps.append(a[0].detach().double()))
        blk.register_forward_hook(lambda m, a, out: norms.append(out.detach().norm(dim=-1)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        theirs(x)
    stats = collect_attention(ours, [x], AnalysisOptions(show=2))
    ours_norms = token_norms(ours, [x])
    assert ours_norms.layout.num_registers == theirs.num_reg_tokens == 4
    torch.testing.assert_close(ours_norms.norms, torch.stack(norms, 1), rtol=1e-4, atol=1e-4)
    p, gw = theirs.num_prefix_tokens, 4  # 5: timm's own count
    centres = torch.tensor([[(i // gw + 0.5) * 8, (i % gw + 0.5) * 8] for i in range(16)], dtype=torch.float64)
    dist = torch.cdist(centres, centres)
    for layer, a in enumerate(maps):
        pp = a[..., p:, p:] / a[..., p:, p:].sum(-1, keepdim=True)
        torch.testing.assert_close(stats.distance[:, layer], (pp * dist).sum(-1).mean(-1).float(), rtol=1e-4,
                                   atol=1e-4)
        torch.testing.assert_close(stats.cls_maps[:, layer], a[:, :, 0, p:].reshape(2, 2, 4, 4).float(), rtol=1e-4,
                                   atol=1e-5)
        one = a[..., 1:17, 1:17] / a[..., 1:17, 1:17].sum(-1, keepdim=True)  # one prefix token assumed
        assert not torch.allclose(stats.distance[:, layer], (one * dist).sum(-1).mean(-1).float(), atol=1e-3)


# ----------------------------------------------------------------------------- outliers
def plant(model: nn.Module, block: int, token: int, scale: float = 25.0) -> torch.utils.hooks.RemovableHandle:
    """Scale one token's hidden state at the output of ``block`` (the residual stream carries it on)."""
    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, token] *= scale
        return out

    return model.blocks[block].register_forward_hook(hook)


@pytest.mark.parametrize("kw", [{"reg_tokens": 4}, {"dist_token": True}])
def test_a_planted_high_norm_token_is_found_at_its_layer_and_place(kw: dict) -> None:
    model = tiny(**kw)
    x = torch.randn(3, 1, 28, 28)
    clean = token_norms(model, [x])
    assert not clean.outliers.any() and clean.summary()["layers_with_outliers"] == []  # negative control
    p = model.num_prefix_tokens
    handle = plant(model, block=1, token=p + 17)  # grid (2, 3) of the 7x7 grid
    try:
        norms = token_norms(model, [x[:2], x[2:]])
    finally:
        handle.remove()
    s = norms.summary()
    assert s["layers_with_outliers"][0] == 1 and s["per_layer"]["outlier_count"][:2] == [0, 3]
    assert {(o["layer"], o["token"], o["row"], o["col"]) for o in s["strongest"] if o["layer"] == 1} == {(1, p + 17, 2, 3)}
    assert s["num_register_tokens"] == kw.get("reg_tokens", 0)
    if "reg_tokens" in kw:
        assert len(s["per_layer"]["registers_norm_ratio"][0]) == 4  # registers apart, never outliers
    # Independent of vitlab's forward_intermediates: the blocks' own outputs, read by hooks.
    outs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, a, o: outs.append(o.norm(dim=-1))) for b in model.blocks]
    with torch.no_grad():
        model(x[:2])
    for h in hooks:
        h.remove()
    torch.testing.assert_close(clean.norms[:2], torch.stack(outs, 1))


def test_the_outlier_rule_is_scale_free_and_robust_to_content() -> None:
    g = torch.Generator().manual_seed(0)
    norms = 1.0 + 0.1 * torch.rand(4, 3, 49, generator=g)
    norms[..., :30] *= 0.05  # a blank background far below the content (like MNIST): not outliers
    norms[1, 2, 40] = 5.0  # ~5x the top of the ordinary tokens
    torch.testing.assert_close(reference_norm(norms), norms.quantile(0.9, dim=-1))  # torch's own percentile
    mask = outlier_mask(norms)
    assert mask.nonzero().tolist() == [[1, 2, 40]]
    assert torch.equal(outlier_mask(1000.0 * norms), mask)
    median_rule = norms > 2.0 * norms.median(dim=-1, keepdim=True).values  # the rule not taken: flags content
    assert int(median_rule.sum()) > 100
    with pytest.raises(ConfigError, match="outlier-factor"):
        outlier_mask(norms, 1.0)


def test_analyze_outliers_cli_with_compare(tmp_path: Path) -> None:
    clean, planted = tiny(), tiny()
    with torch.no_grad():
        planted.pos_embed[0, 1 + 9] += 30.0  # a high-norm token at grid (1, 2) in every image, from block 0 on
    save_weights(tmp_path / "clean.safetensors", clean, ["a", "b", "c"], {"epoch": 0})
    save_weights(tmp_path / "planted.safetensors", planted, ["a", "b", "c"], {"epoch": 0})
    out = tmp_path / "o"
    code = main(["analyze", "outliers", "--model", str(tmp_path / "planted.safetensors"), "--compare",
                 str(tmp_path / "clean.safetensors"), "--images", "mnist-test", "--limit", "4", "--show", "2",
                 "--out", str(out), "--device", "cpu"])
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"outliers.png", "outlier_maps.png", "summary.json"}
    o = json.loads((out / "summary.json").read_text())["outliers"]
    assert o["layers_with_outliers"] == [0, 1, 2] and o["per_layer"]["outlier_count"] == [4, 4, 4]
    assert {(s["row"], s["col"]) for s in o["strongest"]} == {(1, 2)}
    assert [c["outlier_fraction"] for c in o["compare"]] == [pytest.approx(1 / 49), 0.0]
    assert main(["analyze", "maps", "--model", str(tmp_path / "clean.safetensors"), "--compare", "x",
                 "--images", "mnist-test", "--out", str(tmp_path / "m")]) == 2
