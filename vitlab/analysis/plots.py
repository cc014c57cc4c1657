"""Figures for the analyses (matplotlib, headless Agg). Each writes a PNG to a path or a binary file.

Many-panel figures are drawn as one mosaic image (numpy) with a single ``imshow``: a 12 x 13 grid of
attention maps costs one axis, not 156.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

Dest = str | Path | BinaryIO


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, dest: Dest, dpi: int = 100) -> None:
    plt = _pyplot()
    fig.savefig(dest, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)


def _rgb(image: np.ndarray) -> np.ndarray:
    """HxW or HxWx1/3 uint8 -> HxWx3 float in [0, 1]."""
    img = np.asarray(image, dtype=np.float64) / 255.0
    if img.ndim == 2:
        img = img[..., None]
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]


def _normalise(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


@dataclass(frozen=True)
class Scale:
    """The one colour scale of a heat-map figure, and the note drawn on it (None when there is none).

    ``vmin`` / ``vmax`` are in the maps' own units (attention probability): every tile of the figure
    maps a value to the same colour, and the colour bar shows that mapping.
    """

    vmin: float
    vmax: float
    note: str | None = None

    def norm(self):
        import matplotlib

        return matplotlib.colors.Normalize(self.vmin, self.vmax, clip=True)


def shared_scale(maps: torch.Tensor | np.ndarray, note: str | None = None) -> Scale:
    """0 to the largest value of all ``maps``: absolute (0 is no attention), one for the whole figure."""
    top = float(np.asarray(maps, dtype=np.float64).max()) if np.asarray(maps).size else 1.0
    return Scale(0.0, top if top > 0 else 1.0, note)


def overlay(image: np.ndarray, heat: torch.Tensor | np.ndarray, alpha: float = 0.55, cmap: str = "jet",
            scale: Scale | None = None, mode: str = "bilinear") -> np.ndarray:
    """An image (HxW or HxWx3 uint8) with a (gh, gw) map upsampled over it -> HxWx3 float in [0, 1].

    With ``scale`` the map's values are coloured on that absolute scale (what vitlab's attention
    figures use); without, the map is min-max stretched on its own (only for a lone picture: a flat
    map then looks as crisp as a peaked one). ``alpha=1`` gives the map alone (no image showing
    through, which would lend a flat map the image's shapes); ``mode="nearest"`` keeps the patches.
    """
    import matplotlib

    base = _rgb(image)
    h = torch.as_tensor(np.asarray(heat, dtype=np.float32))[None, None]
    kw = {"align_corners": False} if mode == "bilinear" else {}
    up = torch.nn.functional.interpolate(h, size=base.shape[:2], mode=mode, **kw)[0, 0].numpy()
    values = scale.norm()(up).filled(0.0) if scale is not None else _normalise(up)
    colour = matplotlib.colormaps[cmap](values)[..., :3]
    grey = base.mean(axis=2, keepdims=True)
    return (1 - alpha) * grey + alpha * colour


def mosaic(tiles: np.ndarray, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """(R, C, h, w, 3) tiles -> one (R*(h+pad)-pad, C*(w+pad)-pad, 3) image with ``fill`` gaps."""
    R, C, h, w, ch = tiles.shape
    out = np.full((R * (h + pad) - pad, C * (w + pad) - pad, ch), fill, dtype=np.float64)
    for r in range(R):
        for c in range(C):
            out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = tiles[r, c]
    return out


def _upscale(img: np.ndarray, min_side: int = 56) -> np.ndarray:
    k = max(1, math.ceil(min_side / max(1, min(img.shape[:2]))))
    return img.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else img


def _colourbar(fig, ax, scale: Scale, cmap: str, uniform: float | None, label: str) -> None:
    """The figure's one colour bar; a dashed mark at the value a uniform map would have."""
    import matplotlib

    bar = fig.colorbar(matplotlib.cm.ScalarMappable(scale.norm(), cmap), ax=ax, fraction=0.035, pad=0.02)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=6)
    if uniform is not None and scale.vmin <= uniform <= scale.vmax:
        bar.ax.axhline(uniform, color="white", ls="--", lw=1)
        bar.ax.text(1.6, uniform, "uniform", fontsize=6, va="center", transform=bar.ax.get_yaxis_transform())


def _note(fig, note: str | None) -> None:
    if note:
        fig.text(0.5, -0.01, note, ha="center", va="top", fontsize=7, color="#a04000", wrap=True)


def save_attention_maps(image: np.ndarray, cls_maps: torch.Tensor, dest: Dest, title: str = "",
                        scale: Scale | None = None) -> Scale:
    """Rows = blocks, columns = the image then one class-token map per head, overlaid on the image.

    cls_maps: (L, H, gh, gw) attention probabilities. All tiles share one absolute scale (``scale``,
    default 0 to the largest value here) shown by the colour bar; near-uniform maps get a note.
    Returns the scale used. Blocks and heads are numbered from 1.
    """
    from vitlab.analysis.uniformity import normalised_entropy, uniform_note

    plt = _pyplot()
    L, H = cls_maps.shape[:2]
    scale = scale or shared_scale(cls_maps, uniform_note(normalised_entropy(cls_maps), "block-head maps"))
    base = _upscale(_rgb(image))
    # The maps alone, patch by patch: the image column is beside them, and an image blended under a
    # flat map would lend it the image's shapes.
    tiles = np.stack([np.stack([base] + [overlay(base * 255, cls_maps[l, h], 1.0, scale=scale, mode="nearest")
                                         for h in range(H)]) for l in range(L)])
    big = mosaic(tiles, pad=max(1, base.shape[0] // 28))
    fig, ax = plt.subplots(figsize=(min(1.0 * (H + 1) + 1.8, 19), min(1.0 * L + 0.8, 24)))
    ax.imshow(big, interpolation="nearest")
    step_y, step_x = big.shape[0] / L, big.shape[1] / (H + 1)
    ax.set_yticks([step_y * (l + 0.5) for l in range(L)], labels=[f"block {l + 1}" for l in range(L)], fontsize=7)
    ax.set_xticks([step_x * (c + 0.5) for c in range(H + 1)], labels=["image"] + [f"head {h + 1}" for h in range(H)],
                  fontsize=7, rotation=90 if H > 8 else 0)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_title(title or f"class-token attention per block and head ({base.shape[0]}x{base.shape[1]} px)", fontsize=9)
    n = cls_maps.shape[-2] * cls_maps.shape[-1]
    _colourbar(fig, ax, scale, "jet", 1.0 / n, "attention probability per patch")
    _note(fig, scale.note)
    _save(fig, dest)
    return scale


def save_overlay_grid(images: Sequence[np.ndarray], heats: Sequence, titles: Sequence[str], dest: Dest,
                      colours: Sequence[str] | None = None, suptitle: str = "", scale: Scale | None = None) -> Scale:
    """Each image above its saliency map (the map alone, patch by patch); one column per image.

    heats: (gh, gw) maps, all on one absolute scale (default 0 to their largest value) with one
    colour bar; near-uniform maps get a note on the figure. Returns the scale used.
    """
    from vitlab.analysis.uniformity import normalised_entropy, uniform_note

    plt = _pyplot()
    n = len(images)
    stacked = torch.stack([torch.as_tensor(np.asarray(h, dtype=np.float64)) for h in heats[:n]])
    scale = scale or shared_scale(stacked, uniform_note(normalised_entropy(stacked), "saliency maps"))
    cols = max(1, min(n, 8))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(1.9 * cols + 0.8, 3.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = 2 * (i // cols), i % cols
        base = _upscale(_rgb(images[i]))
        axes[r, c].imshow(base, interpolation="nearest")
        axes[r, c].set_title(titles[i], fontsize=8, color=(colours[i] if colours else "black"))
        axes[r + 1, c].imshow(overlay(base * 255, heats[i], 1.0, scale=scale, mode="nearest"), interpolation="nearest")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    cells = stacked.shape[-2] * stacked.shape[-1]
    _colourbar(fig, axes.ravel().tolist(), scale, "jet", float(stacked.sum(dim=(-2, -1)).mean()) / cells,
               "saliency (share of the class token)")
    _note(fig, scale.note)
    _save(fig, dest)
    return scale


def block_ticks(axis, num_blocks: int, offset: int = 1) -> None:
    """Integer block numbers (from 1) on a matplotlib axis whose data runs ``offset`` .. ``offset + L - 1``.

    Every block up to 16, then every 2nd / 4th ... so the labels never overlap.
    """
    every = max(1, math.ceil(num_blocks / 16))
    where = list(range(0, num_blocks, every))
    axis.set_ticks([w + offset for w in where], labels=[str(w + 1) for w in where])


def save_per_head_dots(values: torch.Tensor, dest: Dest, ylabel: str, title: str,
                       reference: tuple[float, str] | None = None) -> None:
    """ViT paper Fig. 7 (right) style: network depth on x, the value on y, one dot per head."""
    plt = _pyplot()
    L, H = values.shape
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    colours = plt.get_cmap("tab20")(np.arange(H) % 20)
    for h in range(H):
        ax.scatter(np.arange(1, L + 1), values[:, h].numpy(), s=14, color=colours[h], label=f"head {h + 1}")
    if reference is not None:
        ax.axhline(reference[0], ls="--", lw=1, color="grey")
        ax.text(1, reference[0], reference[1], fontsize=7, va="bottom", color="grey")
    ax.set_xlabel("network depth (block)")
    ax.set_ylabel(ylabel)
    block_ticks(ax.xaxis, L)
    top = max(float(values.max()), reference[0] if reference else 0.0)
    ax.set_ylim(0, top * 1.1 + 1e-9)
    ax.set_title(title, fontsize=9)
    if H <= 16:
        ax.legend(fontsize=6, ncol=2, loc="lower right", frameon=False)
    fig.tight_layout()
    _save(fig, dest)


def save_posembed(sim: torch.Tensor, dest: Dest) -> None:
    """ViT paper Fig. 7 (centre): tile (r, c) shows position (r, c)'s cosine similarity to every position."""
    plt = _pyplot()
    import matplotlib

    gh, gw = sim.shape[:2]
    cmap = matplotlib.colormaps["viridis"]
    tiles = cmap(((sim.numpy() + 1) / 2).clip(0, 1))[..., :3]  # (gh, gw, gh, gw, 3)
    k = max(1, 8 // max(gh, gw))
    tiles = tiles.repeat(k, axis=2).repeat(k, axis=3)
    big = mosaic(tiles, pad=max(1, tiles.shape[2] // 7))
    fig, ax = plt.subplots(figsize=(6, 6 * gh / gw + 0.4))
    ax.imshow(big, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    ax.set_title("position embedding similarity", fontsize=9)
    fig.colorbar(matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(-1, 1), cmap), ax=ax,
                 fraction=0.046, label="cosine similarity")
    _save(fig, dest)


def save_filters(components: torch.Tensor, explained: torch.Tensor, dest: Dest) -> None:
    """ViT paper Fig. 7 (left): principal components of the patch projection as RGB (or grey) filters."""
    plt = _pyplot()
    k, C = components.shape[:2]
    cols = 7 if k > 7 else k
    rows = math.ceil(k / cols)
    tiles = np.ones((rows, cols, *components.shape[2:], 3))
    for i in range(k):
        f = components[i].permute(1, 2, 0).numpy()
        f = _normalise(f)
        tiles[i // cols, i % cols] = np.repeat(f, 3, axis=2) if C == 1 else f[..., :3]
    tiles = tiles.repeat(max(1, 16 // tiles.shape[2]), axis=2).repeat(max(1, 16 // tiles.shape[3]), axis=3)
    fig, ax = plt.subplots(figsize=(0.9 * cols + 0.4, 0.9 * rows + 0.6))
    ax.imshow(mosaic(tiles, pad=2), interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"{'RGB' if C == 3 else 'grey'} embedding filters: first {k} principal components "
                 f"({100 * float(explained.sum()):.0f}% of variance)", fontsize=8)
    _save(fig, dest)


def save_collapse(cross: torch.Tensor, neighbours: dict[int, torch.Tensor], head_sim: torch.Tensor,
                  dest: Dest, threshold: float, head_threshold: float, similar: Sequence[int],
                  similarity: str = "raw", note: str | None = None) -> None:
    """DeepViT Fig. 3 / 5 style: block-by-block similarity, similarity to the next k blocks, heads.

    cross: (L, L); neighbours: k -> (L - k,); head_sim: (L, H, H); ``similar``: 0-based block
    indices (drawn, like every block number here, from 1). ``note`` is printed under the panels.
    """
    plt = _pyplot()
    L = cross.shape[0]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    low = -1.0 if similarity == "centered" else 0.0  # centred maps can point apart
    im = axes[0].imshow(cross.numpy(), vmin=low, vmax=1, cmap="viridis", extent=(0.5, L + 0.5, L + 0.5, 0.5))
    block_ticks(axes[0].xaxis, L)
    block_ticks(axes[0].yaxis, L)
    axes[0].set_xlabel("block q")
    axes[0].set_ylabel("block p")
    axes[0].set_title(f"cross-layer similarity M^{{p,q}} ({similarity})", fontsize=9)
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    for k, vals in neighbours.items():
        if len(vals):
            axes[1].plot(np.arange(1, len(vals) + 1), vals.numpy(), marker="o", ms=3, label=f"k = {k}")
    axes[1].axhline(threshold, ls="--", lw=1, color="grey")
    axes[1].set_ylim(min(0.0, float(cross.min()) - 0.05), 1.05)
    block_ticks(axes[1].xaxis, L)
    axes[1].set_xlabel("block p")
    axes[1].set_ylabel("similarity to block p + k")
    axes[1].set_title(f"{len(similar)} of {L} blocks similar to a neighbour (>= {threshold:g})", fontsize=9)
    axes[1].legend(fontsize=7, frameon=False)
    H = head_sim.shape[-1]
    off = ~torch.eye(H, dtype=torch.bool)
    vals = [head_sim[l][off].numpy() for l in range(L)] if H > 1 else [np.zeros(1) for _ in range(L)]
    axes[2].boxplot(vals, positions=np.arange(1, L + 1), widths=0.6, showfliers=False)
    axes[2].axhline(head_threshold, ls="--", lw=1, color="grey")
    axes[2].set_ylim(0, 1.05)
    block_ticks(axes[2].xaxis, L)
    axes[2].set_xlabel("block")
    axes[2].set_ylabel("similarity between heads")
    axes[2].set_title(f"within-block head similarity (threshold {head_threshold:g})", fontsize=9)
    fig.tight_layout()
    _note(fig, note)
    _save(fig, dest)


def save_curves(records: Sequence[dict], dest: Dest):
    """From a run's metrics.jsonl records: training loss per step with validation loss per epoch;
    validation accuracy per epoch; the learning rate of every logged step (warmup visible).
    Returns the (closed) matplotlib Figure, whose Axes hold the plotted data."""
    from vitlab.utils.lr_curve import lr_points, lr_title

    plt = _pyplot()
    train = [r for r in records if r.get("kind") == "train" and "loss" in r]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    # the raw weights' validation, else the EMA's (a run with ema.validate_raw: false has only that)
    pre, name = ("val_", "val") if any("val_loss" in r for r in epochs) else ("ema_val_", "EMA val")
    ep = [r for r in epochs if f"{pre}loss" in r]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
    if train:
        axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="train loss (step)")
    if ep:
        axes[0].plot([r["step"] for r in ep], [r[f"{pre}loss"] for r in ep], marker="o", label=f"{name} loss (epoch)")
        axes[1].plot([r["epoch"] + 1 for r in ep], [r[f"{pre}top1"] for r in ep], marker="o", label=f"{name} top-1")
        if any(f"{pre}top5" in r for r in ep):
            axes[1].plot([r["epoch"] + 1 for r in ep], [r.get(f"{pre}top5", float("nan")) for r in ep], marker="s",
                         label=f"{name} top-5")
    steps, rates, spacing = lr_points(records)
    axes[2].plot(steps, rates, lw=1, marker="." if len(steps) <= 200 else None, ms=3, label="lr")
    axes[2].set_title(lr_title(spacing), fontsize=9)
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax, xl, yl in zip(axes, ("optimizer step", "epoch", "optimizer step"), ("loss", "accuracy (%)", "learning rate")):
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes[:2]:
        if ax.lines:
            ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    _save(fig, dest)
    return fig
