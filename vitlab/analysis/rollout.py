"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

Per layer the heads are fused (mean, max or min), optionally the weakest entries are discarded,
the identity is added for the residual connection and the rows are renormalised; the layers'
matrices are then multiplied through the network: ``R = A_L ... A_2 A_1``. Row ``i`` of ``R`` says
how much of token ``i``'s final representation flows from each input token; the class row over
the patches is the saliency map.

The flow runs through every token, registers included (information does pass through them); only
the saliency is read over the patch columns, and the share the class row draws from the prefix
tokens is reported apart (:func:`vitlab.analysis.prefix.rollout_share`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from vitlab.analysis.layout import TokenLayout
from vitlab.errors import ConfigError

HeadFusion = Literal["mean", "max", "min"]


def fuse_heads(attn: torch.Tensor, fusion: HeadFusion = "mean") -> torch.Tensor:
    """(B, H, T, T) -> (B, T, T) by the mean, max or min over heads."""
    if fusion == "mean":
        return attn.mean(dim=1)
    if fusion == "max":
        return attn.amax(dim=1)
    if fusion == "min":
        return attn.amin(dim=1)
    raise ConfigError(f"head fusion must be 'mean', 'max' or 'min', got {fusion!r}")


def discard_lowest(fused: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the ``ratio`` fraction of smallest entries of each (T, T) map (the [0, 0] entry is kept).

    As in the reference implementation (jacobgil/vit-explain): noise suppression before rollout.
    """
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"discard ratio must be in [0, 1), got {ratio}")
    B, T, _ = fused.shape
    k = int(T * T * ratio)
    if k == 0:
        return fused
    flat = fused.reshape(B, T * T).clone()
    idx = flat.topk(k, dim=-1, largest=False).indices
    keep = flat[:, 0].clone()  # never discard the class token's attention to itself
    flat.scatter_(1, idx, 0.0)
    flat[:, 0] = keep
    return flat.reshape(B, T, T)


def attention_rollout(
    attns: Sequence[torch.Tensor], head_fusion: HeadFusion = "mean", discard_ratio: float = 0.0
) -> torch.Tensor:
    """Per-layer (B, H, T, T) maps, first layer first -> (B, T, T) rollout, each row summing to 1."""
    if not attns:
        raise ConfigError("attention rollout needs at least one layer of maps")
    result = None
    for attn in attns:
        a = attn if attn.dtype in (torch.float32, torch.float64) else attn.float()
        a = discard_lowest(fuse_heads(a, head_fusion), discard_ratio)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    return result


def rollout_saliency(rollout: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """(B, T, T) rollout -> (B, gh, gw): the class row over the patch columns, not renormalised.

    Without a class token (mean-pooled, with or without registers): the mean of the patch rows.
    """
    layout.check(rollout)
    p = layout.num_prefix
    rows = rollout[:, 0, p:] if layout.class_token else rollout[:, p:, p:].mean(dim=1)
    return rows.reshape(rollout.shape[0], *layout.grid)
