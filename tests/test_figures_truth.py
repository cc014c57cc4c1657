"""The figures say what the numbers say: one colour scale, a note on flat maps, honest axes and verdicts.

Checked on the figures' data (the matplotlib Figure each function draws, the scale it returns),
against analytic cases (uniform and one-hot maps, a model whose attention is uniform by
construction) and, for the centred collapse similarity, against ``study collapse``'s own measure.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from vitlab.analysis import plots
from vitlab.analysis.collect import AnalysisOptions, AttentionStats, collect_attention
from vitlab.analysis.figures import collapse_verdict, image_figures, weight_figures
from vitlab.analysis.layout import layout_of
from vitlab.analysis.uniformity import UNIFORM_THRESHOLD, normalised_entropy, uniform_note
from vitlab.api import create_model
from vitlab.evaluation.plots import confusion_layout, prediction_caption, save_confusion_png


@pytest.fixture()
def drawn(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every matplotlib Figure the analysis plots save, kept for reading back."""
    figs: list = []
    real = plots._save

    def keep(fig, dest, dpi=100):
        figs.append(fig)
        real(fig, dest, dpi)

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def _tiny(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    args = dict(depth=3, embed_dim=32, num_heads=2, mlp_dim=64, num_classes=3) | kw
    return create_model("vit_pico_patch4_28", **args).eval()


def _set_attention(model: torch.nn.Module, gain: float) -> torch.nn.Module:
    """gain 0: q = k = 0, so every softmax row is exactly uniform; large gain: sharply peaked rows."""
    with torch.no_grad():
        for block in model.blocks:
            w = block.attn.qkv.weight
            d = w.shape[1]
            w[: 2 * d].normal_(0, 1).mul_(gain)  # the q and k rows
            if block.attn.qkv.bias is not None:
                block.attn.qkv.bias[: 2 * d].zero_()
    return model


def _images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------------- uniformity
def test_normalised_entropy_analytic() -> None:
    one_hot = torch.zeros(4, 4)
    one_hot[1, 2] = 0.3  # scale does not matter: a map is normalised first
    half = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    got = normalised_entropy(torch.stack([torch.full((4, 4), 1 / 16), one_hot]))
    assert got.tolist() == pytest.approx([1.0, 0.0], abs=1e-12)
    assert float(normalised_entropy(half)) == pytest.approx(math.log(2) / math.log(4))


def test_note_for_flat_maps_and_not_for_peaked() -> None:
    flat = torch.full((2, 3, 7, 7), 1 / 49) + 1e-4 * torch.rand(2, 3, 7, 7)
    peaked = torch.zeros(2, 3, 7, 7)
    peaked[..., 3, 3] = 0.9
    peaked += 0.1 / 49
    assert uniform_note(normalised_entropy(flat), "maps").startswith("near-uniform attention: 6 of 6 maps")
    assert uniform_note(normalised_entropy(peaked), "maps") is None  # negative control
    assert float(normalised_entropy(peaked).max()) < UNIFORM_THRESHOLD


# ------------------------------------------------------------------------- one absolute colour scale
def test_maps_share_one_absolute_scale_with_a_colour_bar(drawn: list) -> None:
    maps = torch.full((2, 2, 7, 7), 1 / 49) + 1e-3 * torch.rand(2, 2, 7, 7, generator=torch.Generator().manual_seed(0))
    maps[1, 1] = 0.0
    maps[1, 1, 2, 4] = 0.8  # one peaked head
    image = np.zeros((28, 28), dtype=np.uint8)
    scale = plots.save_attention_maps(image, maps, io.BytesIO())
    assert (scale.vmin, scale.vmax) == (0.0, pytest.approx(float(maps.max())))
    bars = [a for a in drawn[-1].axes if a.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylim() == pytest.approx((0.0, float(maps.max())))
    # On the shared scale a near-flat head is one colour; stretched on its own it would span the map.
    flat = maps[0, 0]
    shared = plots.overlay(image, flat, 1.0, scale=scale, mode="nearest")
    alone = plots.overlay(image, flat, 1.0, mode="nearest")
    assert np.ptp(shared, axis=(0, 1)).max() < 0.05
    assert np.ptp(alone, axis=(0, 1)).max() > 0.5  # the old min-max stretch: crisp-looking noise
    # 3 of 4 maps are near uniform: the figure says so (the peaked one keeps the count honest).
    assert scale.note is not None and "3 of 4" in scale.note
    assert any(scale.note in t.get_text() for t in drawn[-1].texts)


def test_rollout_grid_one_scale_and_no_note_for_peaked(drawn: list) -> None:
    heats = [torch.zeros(7, 7) for _ in range(3)]
    for i, h in enumerate(heats):
        h[i, i] = 0.2 * (i + 1)
    images = [np.zeros((28, 28), dtype=np.uint8)] * 3
    scale = plots.save_overlay_grid(images, heats, ["a", "b", "c"], io.BytesIO())
    assert scale.vmax == pytest.approx(0.6) and scale.note is None
    assert not [t for t in drawn[-1].texts if "near-uniform" in t.get_text()]


def test_image_figures_note_uniform_model_not_peaked_model() -> None:
    for gain, expect_note in ((0.0, True), (30.0, False)):
        model = _set_attention(_tiny(), gain)
        o = AnalysisOptions(show=2, which="softmax")
        stats = collect_attention(model, [_images()], o)
        figs = {f.key: f for f in image_figures(("maps", "rollout", "collapse"), stats, [np.zeros((28, 28), np.uint8)] * 4,
                                                ["x"] * 4)}
        assert (figs["attention_maps_0"].note is not None) == expect_note, gain
        assert (figs["collapse"].note is not None) == expect_note, gain


# --------------------------------------------------------------------------------- collapse verdict
def test_centred_collapse_on_uniform_attention() -> None:
    model = _set_attention(_tiny(), 0.0)  # every map exactly 1/T
    x = _images()
    raw = collect_attention(model, [x], AnalysisOptions(which="softmax"))
    centred = collect_attention(model, [x], AnalysisOptions(which="softmax", collapse_similarity="centered"))
    assert torch.allclose(raw.cross_layer.mean(0), torch.ones(3, 3), atol=1e-6)  # "collapsed"
    assert torch.allclose(centred.cross_layer.mean(0), torch.zeros(3, 3), atol=1e-6)  # nothing to compare
    assert collapse_verdict(raw).similar == [0, 1, 2] and collapse_verdict(centred).similar == []
    verdict = collapse_verdict(raw)
    assert verdict.uniform_blocks == [0, 1, 2] and "blocks 1, 2, 3" in verdict.note and "centered" in verdict.note


def test_centred_similarity_equals_the_study_measure() -> None:
    from vitlab.studies.collapse_study import measure

    model, x = _tiny(seed=3), _images(6)
    ours = collect_attention(model, [x[:4], x[4:]], AnalysisOptions(which="softmax", collapse_similarity="centered"))
    study = measure(model, x, batch=4)
    assert torch.allclose(ours.cross_layer.mean(0).double(), torch.tensor(study["centered"]["matrix"], dtype=torch.float64),
                          atol=1e-4)
    assert not torch.allclose(torch.tensor(study["centered"]["matrix"]), torch.tensor(study["softmax"]["matrix"]),
                              atol=1e-2)  # the option changes the numbers


def test_collapse_verdict_quiet_on_peaked_entropy() -> None:
    L, H, N = 4, 2, 3
    layout = layout_of(_tiny())
    low = torch.full((N, L, H), 0.2 * math.log(layout.num_tokens))
    stats = AttentionStats([f"b{i}" for i in range(L)], layout, torch.zeros(N, 3), torch.zeros(N, L, H), low,
                           torch.eye(L).expand(N, L, L), torch.eye(H).expand(N, L, H, H), torch.zeros(N, 7, 7),
                           torch.zeros(0))
    assert collapse_verdict(stats).note is None and collapse_verdict(stats).uniform_blocks == []


# --------------------------------------------------------------------------------------- filters
def test_filters_only_for_a_linear_patch_projection() -> None:
    figs, notes = weight_figures(("filters",), _tiny())
    assert [f.kind for f in figs] == ["filters"] and notes == []
    for stem, args in (("cnn", {"width": 8}), ("conv", {"channels": (8, 16)})):
        figs, notes = weight_figures(("filters",), _tiny(stem=stem, stem_args=args))
        assert figs == [] and len(notes) == 1 and "no linear patch projection" in notes[0], stem


# ------------------------------------------------------------------------------------------- axes
def test_block_axes_are_integers_from_one(drawn: list) -> None:
    values = torch.rand(12, 3)
    plots.save_per_head_dots(values, io.BytesIO(), "y", "t")
    ax = drawn[-1].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(i) for i in range(1, 13)]
    assert sorted({c.get_label() for c in ax.collections}) == ["head 1", "head 2", "head 3"]
    plots.save_collapse(torch.rand(20, 20), {1: torch.rand(19)}, torch.rand(20, 2, 2), io.BytesIO(), 0.8, 0.5, [0])
    for ax in drawn[-1].axes[:1] + drawn[-1].axes[2:3]:
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels[0] == "1" and all(s.isdigit() for s in labels) and len(labels) <= 16


def _overlaps(fig, labels) -> bool:
    """Whether any two level labels' boxes intersect (exact for unrotated text)."""
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in labels if t.get_text()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _rotated_collide(fig, ax, labels) -> bool:
    """Parallel labels at angle r collide when the gap between neighbouring ticks, measured across
    the text (gap * sin r), is less than the text's height."""
    fig.canvas.draw()
    xs = [ax.transData.transform((t.get_position()[0], 0))[0] for t in labels]
    gap = min(b - a for a, b in zip(xs, xs[1:]))
    height = labels[0].get_fontsize() * fig.dpi / 72
    return gap * math.sin(math.radians(labels[0].get_rotation())) < height


@pytest.mark.parametrize("n", [12, 40])
def test_confusion_names_readable(n: int) -> None:
    import matplotlib.pyplot as plt

    classes = [f"class_with_a_long_name_{i}" for i in range(n)]
    fig = save_confusion_png(torch.eye(n, dtype=torch.int64) * 3, classes, io.BytesIO())
    ax = fig.axes[0]
    xl = ax.get_xticklabels()
    assert [t.get_text() for t in xl] == classes and [t.get_text() for t in ax.get_yticklabels()] == classes
    assert xl[0].get_rotation() == 45 and xl[0].get_fontsize() >= 5
    assert not _rotated_collide(fig, ax, xl) and not _overlaps(fig, ax.get_yticklabels())
    # Negative controls: level 10 pt labels on a small figure collide, by either measure.
    bad, bax = plt.subplots(figsize=(6, 6))
    bax.set_xticks(range(n), labels=classes, fontsize=10, rotation=45)
    bax.set_yticks(range(n), labels=classes, fontsize=10 if n > 12 else 30)
    assert _rotated_collide(bad, bax, bax.get_xticklabels()) or n == 12
    assert _overlaps(bad, bax.get_yticklabels())
    plt.close(bad)
    assert confusion_layout(classes)["size"] > confusion_layout(classes[:3])["size"]


def test_lr_curve_has_every_step(drawn: list) -> None:
    warm, total = 5, 30
    lr = [1e-3 * min(1.0, (s + 1) / warm) * (0.5 * (1 + math.cos(math.pi * s / total))) for s in range(total)]
    records = [{"kind": "train", "epoch": s // 10, "step": s + 1, "loss": 1.0, "lr": v} for s, v in enumerate(lr)]
    plots.save_curves(records, io.BytesIO())
    ax = drawn[-1].axes[2]
    line = ax.lines[0]
    assert list(line.get_xdata()) == list(range(1, total + 1)) and list(line.get_ydata()) == lr
    assert ax.get_title() == "learning rate (every step)"
    plots.save_curves(records[9::10], io.BytesIO())  # a log with every 10th step says so
    assert drawn[-1].axes[2].get_title() == "learning rate (logged every 10 steps)"


def test_curves_draw_the_emas_validation_when_it_is_the_only_one(drawn: list) -> None:
    train = [{"kind": "train", "epoch": 0, "step": s, "loss": 1.0, "lr": 1e-3} for s in (1, 2, 3, 4)]
    ema = [{"kind": "epoch", "epoch": e, "step": 2 * e + 2, "ema_val_loss": 0.5 - 0.1 * e, "ema_val_top1": 80.0 + e}
           for e in (0, 1)]
    plots.save_curves(train + ema, io.BytesIO())  # a run with ema.validate_raw: false
    acc = drawn[-1].axes[1]
    assert [t.get_text() for t in acc.get_legend().get_texts()] == ["EMA val top-1"]
    assert list(acc.lines[0].get_ydata()) == [80.0, 81.0]
    raw = [dict(r, val_loss=0.9, val_top1=50.0) for r in ema]  # both present: the raw weights' curve, as before
    plots.save_curves(train + raw, io.BytesIO())
    assert list(drawn[-1].axes[1].lines[0].get_ydata()) == [50.0, 50.0]


def test_prediction_caption() -> None:
    assert prediction_caption("cat", 0.514, "dog") == "cat (p=0.51), true: dog"
    assert prediction_caption("cat", 0.5) == "cat (p=0.50)"
    assert prediction_caption("tench_fish_long", 0.2, "golf_ball_long") == "tench_fish_long (p=0.20),\ntrue: golf_ball_long"


def test_lr_points_every_step_from_any_step_record() -> None:
    from vitlab.utils.lr_curve import lr_points

    records = [{"kind": "train", "step": 1, "lr": 0.1}, {"kind": "skipped_step", "step": 2, "lr": 0.2},
               {"kind": "epoch", "step": 2, "lr": 9.0},  # an epoch summary is not a step
               {"kind": "train", "step": 3, "lr": 0.3}, {"kind": "train", "step": 3, "lr": 0.35}]  # resumed: last wins
    assert lr_points(records) == ([1, 2, 3], [0.1, 0.2, 0.35], 1)
    assert lr_points(records[:1] + records[3:4])[2] == 2
