"""Run a model over image batches with attention captured, keeping per-image statistics only.

Full (B, H, T, T) maps of one batch live only while that batch is processed; what is kept is small:
per image and layer the distance, entropy and similarities, the class-token maps of the first
``show`` images, the rollout saliency of every image, and the share of attention that goes to each
kind of token (class, distillation, registers, patches; :mod:`vitlab.analysis.prefix`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from vitlab.analysis.capture import Which, capture_attention
from vitlab.analysis.collapse import (cross_layer_similarity, head_similarity, mean_off_diagonal, neighbour_similarity,
                                      similar_blocks, similar_head_ratio)
from vitlab.analysis.distance import PrefixMode, mean_attention_distance
from vitlab.analysis.entropy import attention_entropy
from vitlab.analysis.layout import TokenLayout, layout_of
from vitlab.analysis.maps import query_maps
from vitlab.analysis.prefix import batch_shares, share_summary
from vitlab.analysis.rollout import HeadFusion, attention_rollout, rollout_saliency
from vitlab.errors import ConfigError


@dataclass(frozen=True)
class AnalysisOptions:
    """Parameters of the attention analyses (defaults follow the papers)."""

    head_fusion: HeadFusion = "mean"  # rollout: how heads are fused
    discard_ratio: float = 0.0  # rollout: fraction of weakest entries dropped per layer
    distance_prefix: PrefixMode = "renormalize"  # mean distance: see vitlab.analysis.distance
    collapse_threshold: float = 0.8  # DeepViT: adjacent blocks this similar count as "similar"
    head_threshold: float = 0.5  # DeepViT: head pairs this similar count as "similar"
    neighbours: tuple[int, ...] = (1, 2, 3)  # DeepViT: compare block p with p + k
    which: Which = "effective"  # maps + collapse: post-mixing maps where a layer mixes, else softmax
    # collapse: cosine of the maps (the paper), or of the maps minus the uniform 1/T (as study collapse reports)
    collapse_similarity: Literal["raw", "centered"] = "raw"
    show: int = 4  # images whose per-head maps are kept for figures
    outlier_factor: float = 2.0  # outliers: norm > factor x 90th-percentile patch norm (vitlab.analysis.outliers)

    def validate(self) -> None:
        if self.head_fusion not in ("mean", "max", "min"):
            raise ConfigError(f"head fusion must be mean, max or min, got {self.head_fusion!r}")
        if not 0.0 <= self.discard_ratio < 1.0:
            raise ConfigError(f"discard ratio must be in [0, 1), got {self.discard_ratio}")
        if self.distance_prefix not in ("renormalize", "zero"):
            raise ConfigError(f"distance prefix must be renormalize or zero, got {self.distance_prefix!r}")
        if not self.outlier_factor > 1.0:
            raise ConfigError(f"--outlier-factor must be above 1 (a multiple of the reference norm), "
                              f"got {self.outlier_factor}")
        if self.collapse_similarity not in ("raw", "centered"):
            raise ConfigError(f"collapse similarity must be raw or centered, got {self.collapse_similarity!r}")
        for name in ("collapse_threshold", "head_threshold"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} is a cosine similarity in [-1, 1], got {getattr(self, name)}")


@dataclass
class AttentionStats:
    """Per-image attention statistics of a model over a set of images (N images, L layers, H heads)."""

    layer_names: list[str]
    layout: TokenLayout
    logits: torch.Tensor  # (N, C)
    distance: torch.Tensor  # (N, L, H) pixels
    entropy: torch.Tensor  # (N, L, H) nats
    cross_layer: torch.Tensor  # (N, L, L)
    head_sim: torch.Tensor  # (N, L, H, H)
    saliency: torch.Tensor  # (N, gh, gw) rollout class row
    cls_maps: torch.Tensor  # (S, L, H, gh, gw) for the first S = min(show, N) images
    options: AnalysisOptions = field(default_factory=AnalysisOptions)
    shares: dict[str, torch.Tensor] = field(default_factory=dict)  # see vitlab.analysis.prefix.batch_shares

    @property
    def num_images(self) -> int:
        return self.logits.shape[0]

    def neighbours(self) -> dict[int, torch.Tensor]:
        cross = self.cross_layer.mean(0)
        return {k: neighbour_similarity(cross, k) for k in self.options.neighbours}

    def summary(self) -> dict[str, Any]:
        """Image-averaged numbers as plain JSON-able data."""
        o = self.options
        cross = self.cross_layer.mean(0)
        hsim = self.head_sim.mean(0)
        similar = similar_blocks(cross, o.collapse_threshold)
        return {
            "images": self.num_images,
            "layers": self.layer_names,
            "grid": list(self.layout.grid),
            "patch_size": self.layout.patch_size,
            "num_prefix_tokens": self.layout.num_prefix,
            "num_register_tokens": self.layout.num_registers,
            "token_kinds": list(self.layout.groups()),
            "attention_share": share_summary(self.shares, self.layout),
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in o.__dict__.items()},
            "mean_attention_distance_px": self.distance.mean(0).tolist(),
            "attention_entropy_nats": self.entropy.mean(0).tolist(),
            "cross_layer_similarity": cross.tolist(),
            "neighbour_similarity": {str(k): v.tolist() for k, v in self.neighbours().items()},
            "similar_blocks": similar,
            "num_similar_blocks": len(similar),
            "head_similarity_mean": mean_off_diagonal(hsim).tolist(),
            "similar_head_ratio": similar_head_ratio(hsim, o.head_threshold).tolist(),
        }


@torch.no_grad()
def collect_attention(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    options: AnalysisOptions | None = None,
    device: torch.device | str = "cpu",
) -> AttentionStats:
    """Run ``model`` (in eval mode) over ``batches`` of (B, C, H, W) images with attention captured."""
    o = options or AnalysisOptions()
    o.validate()
    layout = layout_of(model)
    was_training = model.training
    model.eval()
    acc: dict[str, list[torch.Tensor]] = {k: [] for k in ("logits", "dist", "ent", "cross", "hsim", "sal", "cls")}
    shares: list[dict[str, torch.Tensor]] = []
    shown = 0
    try:
        with capture_attention(model) as cap:
            for x in batches:
                cap.clear()
                logits = model(x.to(device))
                maps = cap.maps(o.which)  # for the map-shaped analyses
                probs = cap.maps("softmax") if o.which != "softmax" else maps  # rows are distributions
                acc["logits"].append(logits.float().cpu())
                dist = [mean_attention_distance(a, layout, o.distance_prefix) for a in probs]
                acc["dist"].append(torch.stack(dist, 1).cpu())
                acc["ent"].append(torch.stack([attention_entropy(a) for a in probs], 1).cpu())
                cmaps = maps if o.collapse_similarity == "raw" else [a - 1.0 / a.shape[-1] for a in maps]
                acc["cross"].append(cross_layer_similarity(cmaps).float().cpu())
                acc["hsim"].append(torch.stack([head_similarity(a) for a in maps], 1).float().cpu())
                roll = attention_rollout(probs, o.head_fusion, o.discard_ratio)
                acc["sal"].append(rollout_saliency(roll, layout).float().cpu())
                shares.append(batch_shares(probs, roll, layout))
                take = max(0, min(o.show - shown, x.shape[0]))
                if take:
                    acc["cls"].append(torch.stack([query_maps(a[:take], layout) for a in maps], 1).float().cpu())
                    shown += take
            names = list(cap.names)
    finally:
        model.train(was_training)
    if not acc["logits"]:
        raise ConfigError("no images to analyse")
    cat = {k: torch.cat(v) if v else torch.zeros(0) for k, v in acc.items()}
    return AttentionStats(names, layout, cat["logits"], cat["dist"], cat["ent"], cat["cross"], cat["hsim"],
                          cat["sal"], cat["cls"], o, {k: torch.cat([s[k] for s in shares]) for k in shares[0]})
