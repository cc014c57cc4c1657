"""Where attention mass goes, by kind of token: class, distillation, registers, patches.

Registers (Darcet et al. 2024) take over the global computation that, without them, a few
high-norm patch tokens do; in a model that uses its registers, a good part of each query's
attention goes to them. The image-shaped analyses (maps, rollout saliency, distance) read only the
patch columns, so this module says how much mass those leave out.
"""

from __future__ import annotations

from typing import Literal

import torch

from vitlab.analysis.layout import TokenLayout
from vitlab.errors import ConfigError

Queries = Literal["patches", "class"]


def attention_share(attn: torch.Tensor, layout: TokenLayout, queries: Queries = "patches") -> dict[str, torch.Tensor]:
    """(B, H, T, T) probabilities -> per token kind (B, H): the attention mass its keys receive.

    ``queries="patches"``: averaged over the patch queries; ``"class"``: the class token's row.
    The kinds are those of :meth:`TokenLayout.groups`; for rows that sum to 1 the shares do too.

    Raises:
        ConfigError: ``queries="class"`` on a model without a class token, or a bad ``queries``.
    """
    layout.check(attn)
    if queries == "class":
        if not layout.class_token:
            raise ConfigError("attention share of the class token: this model has no class token")
        rows = attn[:, :, :1]
    elif queries == "patches":
        rows = attn[:, :, layout.num_prefix:]
    else:
        raise ConfigError(f"attention share queries must be 'patches' or 'class', got {queries!r}")
    rows = rows if rows.dtype in (torch.float32, torch.float64) else rows.float()
    return {kind: rows[..., span].sum(dim=-1).mean(dim=-1) for kind, span in layout.groups().items()}


def rollout_share(rollout: torch.Tensor, layout: TokenLayout) -> dict[str, torch.Tensor]:
    """(B, T, T) rollout -> per token kind (B,): how much of the output draws on those input tokens.

    The class row where there is a class token, else the mean patch row (as the saliency map).
    """
    layout.check(rollout)
    rows = rollout[:, :1] if layout.class_token else rollout[:, layout.num_prefix:]
    return {kind: rows[..., span].sum(dim=-1).mean(dim=-1) for kind, span in layout.groups().items()}


def batch_shares(probs: list[torch.Tensor], rollout: torch.Tensor, layout: TokenLayout) -> dict[str, torch.Tensor]:
    """One batch's shares by token kind, heads averaged, kinds in :meth:`TokenLayout.groups` order.

    Args:
        probs: per layer (B, H, T, T) probabilities.
        rollout: (B, T, T) their rollout.

    Returns:
        ``from_patches``: (B, L, G); ``from_class``: (B, L, G) where there is a class token;
        ``rollout``: (B, G).
    """
    def stack(per_layer: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack([s.mean(dim=1) for s in d.values()], -1) for d in per_layer], 1)

    out = {"from_patches": stack([attention_share(a, layout, "patches") for a in probs])}
    if layout.class_token:
        out["from_class"] = stack([attention_share(a, layout, "class") for a in probs])
    out["rollout"] = torch.stack(list(rollout_share(rollout, layout).values()), -1)
    return {k: v.float().cpu() for k, v in out.items()}


def share_summary(shares: dict[str, torch.Tensor], layout: TokenLayout) -> dict[str, dict[str, list | float]]:
    """Image-averaged shares (N, L, G) / (N, G) as JSON-able ``{which: {kind: per-layer list or value}}``."""
    kinds = list(layout.groups())
    return {which: {kind: t.mean(0)[..., g].tolist() for g, kind in enumerate(kinds)} for which, t in shares.items()}
