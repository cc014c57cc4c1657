"""DETR's attention figures (the paper's Fig. 3 and Fig. 6) as PNGs for ``vitlab analyze``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vitlab.analysis.detr_attention import DetrAttention
from vitlab.analysis.figures import Figure, _png
from vitlab.analysis.plots import Dest, _pyplot, _rgb, _save, overlay

DETR_ANALYSES = ("encoder", "decoder")

EXPLAIN = {
    "encoder": "Encoder self-attention (last layer, heads averaged): the first panel marks reference positions "
               "(the centres of the most confident boxes); each further panel shows where that position attends "
               "over the image. A trained DETR's encoder already separates the object instances.",
    "decoder": "Decoder cross-attention (last layer, heads averaged): one panel per object query, the most confident "
               "first, with its predicted box; a trained DETR attends to the object's extremities (edges, legs, heads).",
}


def _boxes_px(att: DetrAttention, image: int, queries: list[int], size: tuple[int, int]) -> np.ndarray:
    """(K, 4) predicted xyxy boxes of those queries in input pixels (boxes are relative to the unpadded image)."""
    cx, cy, w, h = att.pred_boxes[image, queries].float().unbind(-1)
    H, W = size
    return torch.stack([(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H], -1).cpu().numpy()


def _panels(n: int, title: str):
    plt = _pyplot()
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.6), squeeze=False)
    fig.suptitle(title, fontsize=9)
    for ax in axes[0]:
        ax.set_xticks([]), ax.set_yticks([])
    return fig, axes[0]


def reference_points(att: DetrAttention, image: int, k: int, size: tuple[int, int]) -> list[tuple[float, float]]:
    """Up to k (y, x) pixel positions in distinct feature cells: the centres of the most confident boxes,
    topped up with the centres of the image's quarters (an untrained model puts every box in one place)."""
    H, W = size
    boxes = _boxes_px(att, image, att.top_queries(image, att.pred_logits.shape[1]), size)
    centres = [((b[1] + b[3]) / 2, (b[0] + b[2]) / 2) for b in boxes]
    quarters = [(H / 4, W / 4), (H / 4, 3 * W / 4), (3 * H / 4, W / 4), (3 * H / 4, 3 * W / 4)]
    points, cells = [], set()
    for y, x in [*centres, *quarters]:
        y, x = min(max(float(y), 0.0), H - 1.0), min(max(float(x), 0.0), W - 1.0)
        cell = (int(y // att.stride), int(x // att.stride))
        if cell not in cells and len(points) < k:
            cells.add(cell)
            points.append((y, x))
    return points


def save_encoder(display: np.ndarray, att: DetrAttention, image: int, k: int, dest: Dest, title: str) -> None:
    """The image with k reference points, then each point's encoder self-attention over the image."""
    size = display.shape[:2]
    points = reference_points(att, image, k, size)
    fig, axes = _panels(len(points) + 1, title)
    axes[0].imshow(_rgb(display))
    axes[0].set_title("reference points", fontsize=7)
    for i, (y, x) in enumerate(points):
        heat = att.to_pixels(att.encoder_map(image, (y, x)), size).cpu()
        axes[i + 1].imshow(overlay(display, heat))
        for ax in (axes[0], axes[i + 1]):
            ax.plot([x], [y], marker="o", markersize=5, markeredgecolor="white", color="red")
        axes[0].annotate(str(i), (x, y), color="white", fontsize=7, xytext=(3, 3), textcoords="offset points")
        axes[i + 1].set_title(f"point {i} (y={y:.0f}, x={x:.0f})", fontsize=7)
    _save(fig, dest)


def save_decoder(display: np.ndarray, att: DetrAttention, image: int, k: int, class_names: Sequence[str],
                 dest: Dest, title: str) -> None:
    """One panel per top-k query: its decoder cross-attention over the image, with its predicted box."""
    plt = _pyplot()
    size = display.shape[:2]
    queries = att.top_queries(image, k)
    boxes = _boxes_px(att, image, queries, size)
    probs = att.class_probs()[image]
    heats = att.to_pixels(att.decoder_maps(image, queries), size).cpu()
    fig, axes = _panels(len(queries), title)
    for ax, q, box, heat in zip(axes, queries, boxes, heats):
        ax.imshow(overlay(display, heat))
        x0, y0, x1, y1 = box
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1.2))
        score, label = probs[q].max(0)
        name = class_names[int(label)] if int(label) < len(class_names) else str(int(label))
        ax.set_title(f"query {q}: {name} {float(score):.2f}", fontsize=7)
    _save(fig, dest)


def detr_figures(what: Sequence[str], att: DetrAttention, display: np.ndarray, name: str, index: int,
                 class_names: Sequence[str], k: int = 4) -> list[Figure]:
    """Encoder / decoder figures of image 0 of ``att`` (files ``detr_encoder_{index}``, ``detr_decoder_{index}``).

    ``k``: reference points / object queries drawn (the most confident predictions). The encoder
    figure is left out for a DETR without encoder layers.
    """
    figs: list[Figure] = []
    k = min(k, att.pred_logits.shape[1])
    if "encoder" in what and att.encoder:
        title = f"encoder self-attention: {name}"
        figs.append(Figure(f"detr_encoder_{index}", "encoder", f"DETR {title}", EXPLAIN["encoder"],
                           _png(lambda f: save_encoder(display, att, 0, k, f, title))))
    if "decoder" in what:
        title = f"decoder cross-attention: {name}"
        figs.append(Figure(f"detr_decoder_{index}", "decoder", f"DETR {title}", EXPLAIN["decoder"],
                           _png(lambda f: save_decoder(display, att, 0, k, class_names, f, title))))
    return figs


def detr_summary(att: DetrAttention, class_names: Sequence[str], k: int = 4) -> dict:
    """Image 0's most confident queries (class, score, normalised cxcywh box) as plain data."""
    queries = att.top_queries(0, min(k, att.pred_logits.shape[1]))
    probs = att.class_probs()[0]
    rows = []
    for q in queries:
        score, label = probs[q].max(0)
        name = class_names[int(label)] if int(label) < len(class_names) else str(int(label))
        rows.append({"query": q, "class": name, "score": round(float(score), 4),
                     "box_cxcywh": [round(float(v), 4) for v in att.pred_boxes[0, q]]})
    return {"feature_size": list(att.feature_size), "stride": att.stride, "top_queries": rows}
