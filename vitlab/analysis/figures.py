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
from vitlab.analysis.uniformity import (UNIFORM_THRESHOLD, near_uniform_blocks, normalised_entropy,
                                        rows_normalised_entropy, uniform_note)
from vitlab.analysis.weights import patch_embedding_components, position_embedding_similarity
from vitlab.errors import ConfigError

IMAGE_ANALYSES = ("maps", "rollout", "distance", "collapse", "entropy")
WEIGHT_ANALYSES = ("posembed", "filters")
ANALYSES = (*IMAGE_ANALYSES, *WEIGHT_ANALYSES)

EXPLAIN = {
    "maps": "Each tile shows where the class token looks in one head (column) of one block (row), over the image the "
            "model saw; every tile (and every image) shares one absolute colour scale, 0 to the largest value, shown "
            "by the colour bar with a dashed mark at uniform attention, so a flat map looks flat.",
    "rollout": "Attention rollout: attention multiplied through all blocks with the residual path added; the bright "
               "regions are the input patches the class token draws on most (one absolute colour scale for all).",
    "distance": "One dot per head: the average distance in pixels between a patch and the patches it attends to; "
                "low is local (like a convolution), high is global; the dashed line is uniform attention.",
    "posembed": "Tile (r, c) shows how similar the position embedding of patch (r, c) is to every other position; "
                "a trained ViT shows its own row, column and neighbourhood as bright.",
    "filters": "The leading principal components of the patch projection, drawn as images: the basis the first layer "
               "uses to describe each patch (trained models show smooth, Gabor-like patterns).",
    "collapse": "Left: attention similarity of every pair of blocks; middle: each block against the next k blocks, "
                "values near 1 above the dashed line mean later blocks repeat earlier ones (attention collapse); "
                "right: similarity between the heads of each block. Near-uniform maps are similar to each other "
                "whatever they attend to: the centred similarity (maps minus 1/T) tells those apart.",
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
    note: str | None = None  # said on the figure and beside it (near-uniform attention, a skipped part)


def _png(draw: Callable[[io.BytesIO], None]) -> bytes:
    buf = io.BytesIO()
    draw(buf)
    return buf.getvalue()


def _figure(kind: str, key: str, draw: Callable[[io.BytesIO], None], title: str | None = None,
            note: str | None = None) -> Figure:
    return Figure(key, kind, title or TITLES[kind], EXPLAIN[kind], _png(draw), note)


def image_figures(what: Sequence[str], stats: AttentionStats, display: Sequence, names: Sequence[str]) -> list[Figure]:
    """Figures of the analyses in ``what`` that need images (see :data:`IMAGE_ANALYSES`)."""
    out: list[Figure] = []
    o = stats.options
    if "maps" in what:
        top = plots.shared_scale(stats.cls_maps).vmax  # one scale over every image's figure, comparable
        for i in range(stats.cls_maps.shape[0]):
            scale = plots.Scale(0.0, top, uniform_note(normalised_entropy(stats.cls_maps[i]), "block-head maps"))
            out.append(_figure("maps", f"attention_maps_{i}", lambda f, i=i, s=scale: plots.save_attention_maps(
                display[i], stats.cls_maps[i], f, names[i], s), f"Attention maps: {names[i]}", scale.note))
    if "rollout" in what:
        n = min(len(display), max(o.show, 8))
        scale = plots.shared_scale(stats.saliency[:n], uniform_note(normalised_entropy(stats.saliency[:n]),
                                                                    "saliency maps"))
        out.append(_figure("rollout", "rollout", lambda f: plots.save_overlay_grid(
            display[:n], stats.saliency[:n], [_short(s) for s in names[:n]], f,
            suptitle=f"rollout: head fusion {o.head_fusion}, discard {o.discard_ratio:g}", scale=scale),
            note=scale.note))
    if "distance" in what:
        uniform = float(stats.layout.patch_distances().mean())
        out.append(_figure("distance", "distance", lambda f: plots.save_per_head_dots(
            stats.distance.mean(0), f, "mean attention distance (pixels)",
            f"mean attention distance ({stats.num_images} images, prefix: {o.distance_prefix})",
            (uniform, "uniform attention"))))
    if "collapse" in what:
        verdict = collapse_verdict(stats)
        out.append(_figure("collapse", "collapse", lambda f: plots.save_collapse(
            stats.cross_layer.mean(0), stats.neighbours(), stats.head_sim.mean(0), f, o.collapse_threshold,
            o.head_threshold, verdict.similar, o.collapse_similarity, verdict.note), note=verdict.note))
    if "entropy" in what:
        out.append(_figure("entropy", "entropy", lambda f: plots.save_per_head_dots(
            stats.entropy.mean(0), f, "attention entropy (nats)", f"attention entropy ({stats.num_images} images)",
            (math.log(stats.layout.num_tokens), "uniform attention"))))
    return out


@dataclass
class CollapseVerdict:
    """What the collapse figure and summary say: similar blocks (0-based), near-uniform blocks, a note."""

    similar: list[int]
    uniform_blocks: list[int]
    note: str | None


def collapse_verdict(stats: AttentionStats) -> CollapseVerdict:
    """Similar blocks on the chosen similarity, and a warning when blocks attend near uniformly.

    Near-uniform maps (normalised row entropy > :data:`UNIFORM_THRESHOLD`, image-averaged) have a
    raw cosine close to 1 with any other near-uniform map: such blocks look "similar" whatever they
    attend to. The centred similarity (maps minus 1/T, as ``study collapse`` reports) does not.
    """
    o = stats.options
    similar = similar_blocks(stats.cross_layer.mean(0), o.collapse_threshold)
    per_block = rows_normalised_entropy(stats.entropy.mean(0).mean(-1), stats.layout.num_tokens)
    uniform = near_uniform_blocks(per_block)
    note = None
    if uniform:
        advice = ("here raw similarity is ~1 whatever they attend to: compare --collapse-similarity centered"
                  if o.collapse_similarity == "raw" else "the centred similarity used here discounts that")
        note = (f"warning: {len(uniform)} of {len(per_block)} blocks attend near uniformly (normalised entropy > "
                f"{UNIFORM_THRESHOLD:g}: blocks {_numbers(uniform)}); {advice}")
    return CollapseVerdict(similar, uniform, note)


def _numbers(blocks: Sequence[int]) -> str:
    """0-based indices as the 1-based block numbers the figures show."""
    return ", ".join(str(b + 1) for b in blocks)


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
