"""Attention collapse (Zhou et al. 2021, "DeepViT: Towards Deeper Vision Transformer", Sec. 3).

Cross-layer similarity (their Eq. 3): ``M^{p,q}_{h,t} = cos(A^p_{h,:,t}, A^q_{h,:,t})``, the cosine
between column ``t`` (how much every query attends to token ``t``) of head ``h`` in blocks p and q;
averaged over heads, tokens and images. Deep plain ViTs have adjacent blocks with M close to 1:
later blocks repeat the attention of earlier ones. Heads within a block are compared the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vitlab.errors import ConfigError


def _columns_unit(attn: torch.Tensor) -> torch.Tensor:
    """Scale every column A[..., :, t] to unit length (an all-zero column stays zero).

    In float64: the squares of a peaked map's tiny entries underflow float32, the norm becomes 0,
    and the clamped division then blows the similarities up (seen: values around 1e12).
    """
    a = attn.double()
    return a / a.norm(dim=-2, keepdim=True).clamp_min(1e-300)


def cross_layer_similarity(attns: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-layer (B, H, T, T) maps -> (B, L, L): M^{p,q} per image, averaged over heads and tokens."""
    heads = {tuple(a.shape) for a in attns}
    if len(heads) != 1:
        raise ConfigError(f"cross-layer similarity needs maps of one shape, got {sorted(heads)}")
    x = torch.stack([_columns_unit(a) for a in attns])  # (L, B, H, T, T)
    _, _, H, _, T = x.shape
    return torch.einsum("pbhit,qbhit->bpq", x, x) / (H * T)


def head_similarity(attn: torch.Tensor) -> torch.Tensor:
    """(B, H, T, T) -> (B, H, H): cosine between heads' columns, averaged over tokens."""
    x = _columns_unit(attn)
    return torch.einsum("bhit,bgit->bhg", x, x) / attn.shape[-1]


def neighbour_similarity(sim: torch.Tensor, k: int) -> torch.Tensor:
    """(L, L) -> (L - k,): the similarity of each block p with block p + k."""
    if not 0 < k < sim.shape[0]:
        return sim.new_zeros(0)
    return torch.diagonal(sim, offset=k)


def similar_blocks(sim: torch.Tensor, threshold: float = 0.8) -> list[int]:
    """Blocks whose similarity to an adjacent block (p - 1 or p + 1) is at least ``threshold``."""
    adj = neighbour_similarity(sim, 1)
    out = []
    for p in range(sim.shape[0]):
        left = p > 0 and float(adj[p - 1]) >= threshold
        right = p < len(adj) and float(adj[p]) >= threshold
        if left or right:
            out.append(p)
    return out


def similar_head_ratio(hsim: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(..., H, H) -> (...,): fraction of distinct head pairs with similarity >= ``threshold``."""
    H = hsim.shape[-1]
    if H < 2:
        return hsim.new_zeros(hsim.shape[:-2])
    off = ~torch.eye(H, dtype=torch.bool, device=hsim.device)
    return ((hsim >= threshold) & off).sum(dim=(-2, -1)).to(hsim.dtype) / (H * (H - 1))


def mean_off_diagonal(hsim: torch.Tensor) -> torch.Tensor:
    """(..., H, H) -> (...,): mean similarity between distinct heads."""
    H = hsim.shape[-1]
    if H < 2:
        return hsim.new_zeros(hsim.shape[:-2])
    off = ~torch.eye(H, dtype=torch.bool, device=hsim.device)
    return (hsim * off).sum(dim=(-2, -1)) / (H * (H - 1))
