"""Class-token-to-patch attention maps per head and layer (what the [class] token looks at)."""

from __future__ import annotations

import torch

from vitlab.analysis.layout import TokenLayout


def query_maps(attn: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """(B, H, T, T) probabilities -> (B, H, gh, gw) maps over the patch grid.

    With a class token: its row, restricted to the patch columns (the mass it puts on prefix
    tokens is left out, so a map need not sum to 1). Without prefix tokens (mean-pooled models):
    the attention each patch receives, averaged over all query patches.
    """
    layout.check(attn)
    p = layout.num_prefix
    rows = attn[:, :, 0, p:] if p else attn.mean(dim=2)
    return rows.reshape(*attn.shape[:2], *layout.grid)
