"""PNG figures for evaluation and prediction (matplotlib, headless Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_confusion_png(confusion: torch.Tensor, classes: Sequence[str], path: str | Path) -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted) with counts."""
    plt = _pyplot()
    conf = confusion.double().numpy()
    rows = conf.sum(axis=1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    n = len(classes)
    size = min(max(4.0, 0.45 * n + 2), 30.0)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), labels=list(classes), rotation=90 if n > 10 else 0)
        ax.set_yticks(range(n), labels=list(classes))
        for i in range(n):
            for j in range(n):
                if conf[i, j]:
                    ax.text(j, i, int(conf[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row-normalised colour, counts)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
