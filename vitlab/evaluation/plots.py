"""PNG figures for evaluation and prediction (matplotlib, headless Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def confusion_layout(classes: Sequence[str]) -> dict[str, float]:
    """Figure size (inches), tick-label font size (pt) and x-label rotation for ``len(classes)`` classes.

    Each row needs room for one label at the font size: the side grows ~0.3 in a class (capped at
    40 in), the font shrinks from 10 pt to 5 pt, and x labels turn 45 degrees once they would collide.
    """
    n = max(1, len(classes))
    longest = max((len(c) for c in classes), default=1)
    font = float(np.clip(220.0 / n, 5.0, 10.0))
    size = float(np.clip(0.3 * n + 0.06 * longest * font / 8 + 3.0, 4.5, 40.0))
    rotation = 45.0 if n >= 10 or longest * n > 60 else 0.0
    return {"size": size, "font": font, "rotation": rotation, "counts_font": max(4.0, font - 2.0)}


def save_confusion_png(confusion: torch.Tensor, classes: Sequence[str], path: str | Path | BinaryIO):
    """Row-normalised confusion matrix (rows: true class, columns: predicted) with counts.

    Every class is named up to 120 classes (font and figure size follow :func:`confusion_layout`),
    beyond that every k-th. Returns the (closed) matplotlib Figure.
    """
    plt = _pyplot()
    conf = confusion.double().numpy()
    rows = conf.sum(axis=1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    n = len(classes)
    lay = confusion_layout(classes)
    fig, ax = plt.subplots(figsize=(lay["size"] + 1.0, lay["size"]))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    step = max(1, -(-n // 120))
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks, labels=[classes[i] for i in ticks], rotation=lay["rotation"], fontsize=lay["font"],
                  ha="right" if lay["rotation"] else "center", rotation_mode="anchor")
    ax.set_yticks(ticks, labels=[classes[i] for i in ticks], fontsize=lay["font"])
    if n <= 40:  # counts fit in the cells
        for i in range(n):
            for j in range(n):
                if conf[i, j]:
                    ax.text(j, i, int(conf[i, j]), ha="center", va="center", fontsize=lay["counts_font"],
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row-normalised colour" + (", counts)" if n <= 40 else ")"))
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return fig


def prediction_caption(predicted: str, prob: float, truth: str | None = None, width: int = 24) -> str:
    """``"cat (p=0.51), true: dog"`` (``"cat (p=0.51)"`` without a label); broken after the comma
    when longer than ``width`` characters, so a caption stays over its own image."""
    text = f"{predicted} (p={prob:.2f})"
    if truth is None:
        return text
    return text + (",\n" if len(text) + len(truth) + 8 > width else ", ") + f"true: {truth}"


def save_prediction_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | Path,
    correct: Sequence[bool | None] | None = None,
    cols: int = 8,
) -> None:
    """A grid of images, each titled with its prediction; green / red titles when truth is known.

    images: HxW (grey) or HxWx3 uint8 arrays.
    """
    plt = _pyplot()
    n = len(images)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows), squeeze=False)
    for idx, ax in enumerate(axes.flat):
        ax.axis("off")
        if idx >= n:
            continue
        img = images[idx]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ok = None if correct is None else correct[idx]
        color = "black" if ok is None else ("green" if ok else "red")
        ax.set_title(titles[idx], fontsize=8, color=color)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
