"""Figures of the high-norm outlier analysis (:mod:`vitlab.analysis.outliers`), as titled PNGs.

``outliers``: per layer, every patch token's norm relative to its image's reference (log scale) with
the cut, registers and the class token marked apart, beside the outlier fraction per layer (one
line per model when models are compared). ``outlier_maps``: for the first images, where the
outliers sit on the image at the layer with the most of them, beside the norm-ratio map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from vitlab.analysis import plots
from vitlab.analysis.figures import Figure, _png
from vitlab.analysis.inputs import ImageSet
from vitlab.analysis.outliers import TokenNorms, compare, token_norms

KIND = "outliers"
TITLE = "High-norm outlier tokens"
EXPLAIN = ("Left: one dot per patch token and image, its norm after each block divided by the 90th percentile of "
           "the patch norms of its image and layer; red dots above the dashed cut are outliers (Darcet et al. 2024: patch tokens the "
           "model recycles for global computation), orange marks register tokens, green the class token. Right: "
           "the fraction of patch tokens that are outliers per layer; a model with registers should stay near 0.")


def outlier_figures(norms: TokenNorms, display: Sequence[np.ndarray], names: Sequence[str], show: int = 4,
                    others: Sequence[tuple[str, TokenNorms]] = (), name: str = "model") -> list[Figure]:
    """The ``outliers`` figure (with ``others`` drawn beside on the right panel) and the ``outlier_maps``."""
    figs = [Figure("outliers", KIND, TITLE, EXPLAIN, _png(lambda f: _save_norms(norms, [(name, norms), *others], f)))]
    k = min(show, len(display), norms.norms.shape[0])
    if k:
        figs.append(Figure("outlier_maps", KIND, f"{TITLE}: where they are", EXPLAIN,
                           _png(lambda f: _save_maps(norms, display[:k], names[:k], f))))
    return figs


def _save_norms(norms: TokenNorms, models: Sequence[tuple[str, TokenNorms]], dest) -> None:
    """Left: layer x norm ratio (log); right: outlier fraction per layer of each model."""
    plt = plots._pyplot()
    lay, ratio, mask = norms.layout, norms.ratio.numpy(), norms.outliers.numpy()
    N, L, _ = ratio.shape
    p = lay.num_prefix
    rng = np.random.default_rng(0)  # fixed jitter: the same figure for the same data
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for layer in range(L):
        vals, out = ratio[:, layer, p:].ravel(), mask[:, layer].ravel()
        x = layer + rng.uniform(-0.3, 0.3, vals.shape)
        left.scatter(x[~out], vals[~out], s=3, color="tab:blue", alpha=0.35, linewidths=0)
        left.scatter(x[out], vals[out], s=9, color="tab:red", linewidths=0)
    groups = lay.groups()
    for kind, colour, marker in (("registers", "tab:orange", "x"), ("class", "tab:green", "+")):
        if kind in groups:
            vals = ratio[:, :, groups[kind]].mean(0)  # (L, k) image-averaged
            for j in range(vals.shape[1]):
                left.scatter(np.arange(L), vals[:, j], s=24, color=colour, marker=marker,
                             label=kind if j == 0 else None)
    left.axhline(norms.factor, ls="--", lw=1, color="grey")
    left.text(0, norms.factor, f"cut: {norms.factor:g} x reference", fontsize=7, va="bottom", color="grey")
    left.set_yscale("log")
    plots.block_ticks(left.xaxis, L, offset=0)  # numbered from 1 like every block figure
    left.set(xlabel="network depth (block)", ylabel="norm / 90th-percentile patch norm")
    left.set_title(f"token norms after each block ({N} images)", fontsize=9)
    if "registers" in groups or "class" in groups:
        left.legend(fontsize=7, frameon=False, loc="center right")
    for label, t in models:
        frac = t.outliers.float().mean(dim=(0, 2)).numpy() * 100
        right.plot(np.arange(len(frac)), frac, marker="o", ms=3,
                   label=f"{label} ({t.layout.num_registers} registers)")
    plots.block_ticks(right.xaxis, max(len(t.layer_names) for _, t in models), offset=0)
    right.set(xlabel="network depth (block)", ylabel="outlier patch tokens (%)")
    right.set_ylim(bottom=0)
    right.legend(fontsize=7, frameon=False)
    right.set_title("outlier fraction per block", fontsize=9)
    fig.tight_layout()
    plots._save(fig, dest)


def _save_maps(norms: TokenNorms, display: Sequence[np.ndarray], names: Sequence[str], dest) -> None:
    """One row per image: the image with its outlier patches boxed, and the norm-ratio map, at the worst layer."""
    import matplotlib.patches as mpatches

    plt = plots._pyplot()
    layer, (gh, gw), p = norms.worst_layer(), norms.layout.grid, norms.layout.num_prefix
    k = len(display)
    fig, axes = plt.subplots(k, 2, figsize=(5.0, 2.5 * k), squeeze=False)
    for i in range(k):
        base = plots._rgb(display[i])
        sy, sx = base.shape[0] / gh, base.shape[1] / gw
        axes[i, 0].imshow(base, interpolation="nearest")
        for j in norms.outliers[i, layer].nonzero().flatten().tolist():
            axes[i, 0].add_patch(mpatches.Rectangle(((j % gw) * sx, (j // gw) * sy), sx, sy, fill=False,
                                                    edgecolor="red", lw=1.5))
        im = axes[i, 1].imshow(norms.ratio[i, layer, p:].reshape(gh, gw).numpy(), cmap="magma",
                               interpolation="nearest")
        fig.colorbar(im, ax=axes[i, 1], fraction=0.046, pad=0.04)
        axes[i, 0].set_title(_short(names[i]), fontsize=8)
        axes[i, 1].set_title(f"norm / reference, block {layer + 1}", fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    fig.tight_layout()
    plots._save(fig, dest)


def _short(name: str, width: int = 24) -> str:
    """A long path shortened from the left, for a panel title."""
    return name if len(name) <= width else "..." + name[-(width - 3):]


def outlier_section(model: nn.Module, name: str, images: ImageSet, factor: float, show: int = 4, batch_size: int = 32,
                    device: torch.device | str = "cpu", other: tuple[str, nn.Module, ImageSet] | None = None
                    ) -> tuple[list[Figure], dict[str, Any]]:
    """Token norms of ``model`` over ``images`` -> (figures, JSON summary); ``other``: a model compared beside.

    ``other`` is (name, model, the same images preprocessed for that model); its outlier fractions are
    drawn beside and listed under ``compare`` in the summary.
    """
    norms = token_norms(model, images.batches(batch_size), factor, device)
    summary = norms.summary()
    others: list[tuple[str, TokenNorms]] = []
    if other is not None:
        o_name, o_model, o_images = other
        others = [(o_name if o_name != name else f"{o_name} (compare)", token_norms(
            o_model, o_images.batches(batch_size), factor, device))]
        summary["compare"] = compare([(name, norms), *others])
    return outlier_figures(norms, images.display, images.names, show, others, name), summary


def outlier_note(summary: dict[str, Any]) -> str:
    """One line for a report: how many patch tokens are outliers, from which block, by which rule."""
    frac, where = summary["outlier_fraction"], summary["layers_with_outliers"]
    first = f"from block {where[0] + 1} on ({len(where)} of {len(summary['layers'])} blocks)" if where else "in no block"
    line = f"{100 * frac:.2f}% of patch tokens are outliers, {first}; rule: {summary['rule']}"
    for other in summary.get("compare", [])[1:]:
        line += f"; {other['model']}: {100 * other['outlier_fraction']:.2f}%"
    return line
