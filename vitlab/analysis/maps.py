"""Class-token-to-patch attention maps per head and layer (what the [class] token looks at).

Only the patch columns are drawn: the prefix tokens (class, distillation, registers) have no place
on the grid. What goes to them is reported apart (:func:`vitlab.analysis.prefix.attention_share`).
"""

from __future__ import annotations

import torch

from vitlab.analysis.layout import TokenLayout


def query_maps(attn: torch.Tensor, layout: TokenLayout, renormalize: bool = False) -> torch.Tensor:
    """(B, H, T, T) probabilities -> (B, H, gh, gw) maps over the patch grid.

    With a class token: its row, restricted to the patch columns. Without one (mean-pooled models,
    with or without registers): the attention each patch receives from the patch queries, averaged
    over those queries (register and other prefix queries are left out).

    ``renormalize=False`` (the default, what the figures show): the raw probabilities, so the mass
    the query puts on prefix tokens is left out and a map sums to 1 minus that mass.
    ``renormalize=True``: each query row is divided by its mass on the patches first, so a map sums to 1.
    """
    layout.check(attn)
    p = layout.num_prefix
    rows = attn[:, :, :1, p:] if layout.class_token else attn[:, :, p:, p:]  # (B, H, Q, N)
    if renormalize:
        rows = rows / rows.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    return rows.mean(dim=2).reshape(*attn.shape[:2], *layout.grid)
