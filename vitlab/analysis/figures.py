"""Every analysis as a titled PNG with a one-line reading guide: what the CLI writes and the report embeds."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from vitlab.analysis import plots
from vitlab.analysis.collect import AttentionStats
from vitlab.analysis.collapse import similar_blocks
from vitlab.analysis.weights import patch_embedding_components, position_embedding_similarity
from vitlab.errors import ConfigError

IMAGE_ANALYSES = ("maps", "rollout", "distance", "collapse", "entropy")
WEIGHT_ANALYSES = ("posembed", "filters")
ANALYSES = (*IMAGE_ANALYSES, *WEIGHT_ANALYSES)

EXPLAIN = {
    "maps": "Each tile shows where the class token looks in one head (column) of one layer (row): red is more "
            "attention, over the image the model saw.",
    "rollout": "Attention rollout: attention multiplied through all layers with the residual path added; the bright "
               "regions are the input patches the class token draws on most.",
    "distance": "One dot per head: the average distance in pixels between a patch and the patches it attends to; "
                "low is local (like a convolution), high is global; the dashed line is uniform attention.",
    "posembed": "Tile (r, c) shows how similar the position embedding of patch (r, c) is to every other position; "
                "a trained ViT shows its own row, column and neighbourhood as bright.",
    "filters": "The leading principal components of the patch projection, drawn as images: the basis the first layer "
               "uses to describe each patch (trained models show smooth, Gabor-like patterns).",
    "collapse": "Left: attention similarity of every pair of blocks; middle: each block against the next k blocks, "
                "values near 1 above the dashed line mean later blocks repeat earlier ones (attention collapse); "
                "right: similarity between the heads of each block.",
    "entropy": "One dot per head: the entropy of its attention rows in nats; 0 means each query looks at a single "
               "token, the dashed line is uniform attention over all tokens.",
}

TITLES = {
    "maps": "Attention maps", "rollout": "Attention rollout", "distance": "Mean attention distance",
    "posembed": "Position-embedding similarity", "filters": "Patch-embedding filters",
    "collapse": "Attention collapse (cross-layer similarity)", "entropy": "Attention entropy",
}


@dataclass
class Figure:
    key: str  # file stem, e.g. "distance" or "attention_maps_0"
    kind: str  # one of ANALYSES
    title: str
    explain: str
    png: bytes


def _png(draw: Callable[[io.BytesIO], None]) -> bytes:
    buf = io.BytesIO()
    draw(buf)
    return buf.getvalue()


def _figure(kind: str, key: str, draw: Callable[[io.BytesIO], None], title: str | None = None) -> Figure:
    return Figure(key, kind, title or TITLES[kind], EXPLAIN[kind], _png(draw))


def image_figures(what: Sequence[str], stats: AttentionStats, display: Sequence, names: Sequence[str]) -> list[Figure]:
    """Figures of the analyses in ``what`` that need images (see :data:`IMAGE_ANALYSES`)."""
    out: list[Figure] = []
    o = stats.options
    if "maps" in what:
        for i in range(stats.cls_maps.shape[0]):
            out.append(_figure("maps", f"attention_maps_{i}",
                               lambda f, i=i: plots.save_attention_maps(display[i], stats.cls_maps[i], f, names[i]),
                               f"Attention maps: {names[i]}"))
    if "rollout" in what:
        n = min(len(display), max(o.show, 8))
        out.append(_figure("rollout", "rollout", lambda f: plots.save_overlay_grid(
            display[:n], stats.saliency[:n], [_short(s) for s in names[:n]], f,
            suptitle=f"rollout: head fusion {o.head_fusion}, discard {o.discard_ratio:g}")))
    if "distance" in what:
        uniform = float(stats.layout.patch_distances().mean())
        out.append(_figure("distance", "distance", lambda f: plots.save_per_head_dots(
            stats.distance.mean(0), f, "mean attention distance (pixels)",
            f"mean attention distance ({stats.num_images} images, prefix: {o.distance_prefix})",
            (uniform, "uniform attention"))))
    if "collapse" in what:
        cross = stats.cross_layer.mean(0)
        similar = similar_blocks(cross, o.collapse_threshold)
        out.append(_figure("collapse", "collapse", lambda f: plots.save_collapse(
            cross, stats.neighbours(), stats.head_sim.mean(0), f, o.collapse_threshold, o.head_threshold, similar)))
    if "entropy" in what:
        out.append(_figure("entropy", "entropy", lambda f: plots.save_per_head_dots(
            stats.entropy.mean(0), f, "attention entropy (nats)", f"attention entropy ({stats.num_images} images)",
            (math.log(stats.layout.num_tokens), "uniform attention"))))
    return out


def weight_figures(what: Sequence[str], model: nn.Module, components: int = 28) -> tuple[list[Figure], list[str]]:
    """Figures of the weight-only analyses in ``what``; plus a note for each one the model cannot have."""
    out: list[Figure] = []
    notes: list[str] = []
    if "posembed" in what:
        try:
            sim = position_embedding_similarity(model)
            out.append(_figure("posembed", "posembed", lambda f: plots.save_posembed(sim, f)))
        except ConfigError as err:
            notes.append(f"posembed: {err}")
    if "filters" in what:
        try:
            comps, explained = patch_embedding_components(model, components)
            out.append(_figure("filters", "filters", lambda f: plots.save_filters(comps, explained, f)))
        except ConfigError as err:
            notes.append(f"filters: {err}")
    return out, notes


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]
