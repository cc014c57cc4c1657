"""Mean attention distance (ViT paper, Fig. 7 right; appendix D.7).

For a head, the distance of query patch ``i`` is ``sum_j A[i, j] * ||pos(i) - pos(j)||`` in pixels
between patch centres; it is averaged over the query patches and the images. It is the analogue of
a CNN's receptive field: small for heads that look locally, large for heads that look everywhere.

Prefix tokens (class, distillation, registers: ``layout.num_prefix`` of them, read from the model)
have no position, so queries are always the patches. Their keys:

* ``"renormalize"`` (default): keys are the patches only and each row is renormalised to sum to 1,
  i.e. the distance of where a patch's attention over *other patches* goes.
* ``"zero"``: the raw probabilities over patches, so mass on prefix tokens counts as distance 0
  (the convention of several public re-implementations that slice ``attn[..., 1:, 1:]``).

Both agree for models without prefix tokens. Identity attention gives 0; uniform attention over
the patches gives the grid's mean pairwise distance.
"""

from __future__ import annotations

from typing import Literal

import torch

from vitlab.analysis.layout import TokenLayout
from vitlab.errors import ConfigError

PrefixMode = Literal["renormalize", "zero"]


def mean_attention_distance(attn: torch.Tensor, layout: TokenLayout, prefix: PrefixMode = "renormalize") -> torch.Tensor:
    """(B, H, T, T) probabilities -> (B, H) mean attention distance in pixels per image and head."""
    if prefix not in ("renormalize", "zero"):
        raise ConfigError(f"distance prefix mode must be 'renormalize' or 'zero', got {prefix!r}")
    layout.check(attn)
    p = layout.num_prefix
    a = attn[..., p:, p:]  # (B, H, N, N): patch queries -> patch keys
    a = a if a.dtype in (torch.float32, torch.float64) else a.float()
    if prefix == "renormalize":
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    dist = layout.patch_distances().to(device=a.device, dtype=a.dtype)
    return (a * dist).sum(dim=-1).mean(dim=-1)
