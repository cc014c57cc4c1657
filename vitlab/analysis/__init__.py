"""Analysis of what attention does: the ViT and DeepViT papers' figures for any vitlab ViT.

>>> from vitlab.analysis import capture_attention, attention_rollout, mean_attention_distance
>>> with capture_attention(model) as cap:
...     logits = model(images)
>>> maps = cap.effective()           # per layer (B, H, T, T), ReAttention's mixed maps included

Capture (the one recorder, :mod:`vitlab.layers.recorder`: hooks on every vitlab attention layer,
found by base class, DETR's included), the metrics (rollout, mean attention
distance, entropy, DeepViT's cross-layer and head similarity, position-embedding similarity,
patch-embedding principal components, the attention share of each token kind: class, registers,
patches; high-norm outlier tokens per layer), a batch runner that keeps only small statistics, figures,
and the self-contained HTML report. See docs/analysis.md.
"""

from vitlab.analysis.capture import CapturedAttention, capture_attention, find_attention
from vitlab.analysis.collapse import (cross_layer_similarity, head_similarity, neighbour_similarity, similar_blocks,
                                      similar_head_ratio)
from vitlab.analysis.collect import AnalysisOptions, AttentionStats, collect_attention
from vitlab.analysis.distance import mean_attention_distance
from vitlab.analysis.entropy import attention_entropy
from vitlab.analysis.layout import TokenLayout, layout_of
from vitlab.analysis.maps import query_maps
from vitlab.analysis.outliers import TokenNorms, outlier_mask, token_norms
from vitlab.analysis.prefix import attention_share, rollout_share
from vitlab.analysis.rollout import attention_rollout, fuse_heads, rollout_saliency
from vitlab.analysis.weights import patch_embedding_components, position_embedding_similarity

__all__ = [
    "AnalysisOptions",
    "AttentionStats",
    "CapturedAttention",
    "TokenLayout",
    "TokenNorms",
    "attention_entropy",
    "attention_rollout",
    "attention_share",
    "capture_attention",
    "collect_attention",
    "cross_layer_similarity",
    "find_attention",
    "fuse_heads",
    "head_similarity",
    "layout_of",
    "mean_attention_distance",
    "neighbour_similarity",
    "outlier_mask",
    "patch_embedding_components",
    "position_embedding_similarity",
    "query_maps",
    "rollout_saliency",
    "rollout_share",
    "similar_blocks",
    "similar_head_ratio",
    "token_norms",
]
