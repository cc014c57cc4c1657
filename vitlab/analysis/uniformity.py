"""When attention is near uniform, and the one sentence a figure then carries.

A map that spreads its mass evenly over N cells has entropy ``log N``. The *normalised* entropy
``H(p) / log N`` is 1 for the uniform map and 0 for a one-hot map, whatever N is. Above
:data:`UNIFORM_THRESHOLD` (0.95) a map is called near uniform: for N = 196 patches that is a map
whose entropy is that of a uniform map over ~150 patches (196 ** 0.95), i.e. one that singles
nothing out. Such maps are what an untrained or collapsed model draws; on a min-max stretched
colour scale they still look crisp and object-shaped, hence the note.
"""

from __future__ import annotations

import math

import torch

UNIFORM_THRESHOLD = 0.95


def normalised_entropy(maps: torch.Tensor, dims: int = 2) -> torch.Tensor:
    """(..., *cells) non-negative maps over the last ``dims`` dims -> (...,) entropy / log(cells).

    Each map is divided by its sum first (a class-token map leaves out the mass on prefix tokens);
    an all-zero map counts as uniform (it singles nothing out). One cell gives 1.
    """
    flat = maps.double().flatten(start_dim=maps.dim() - dims)
    n = flat.shape[-1]
    total = flat.sum(dim=-1, keepdim=True)
    p = torch.where(total > 0, flat / total.clamp_min(1e-300), torch.full_like(flat, 1.0 / n))
    ent = -torch.special.xlogy(p, p).sum(dim=-1)
    return ent / math.log(n) if n > 1 else torch.ones_like(ent)


def rows_normalised_entropy(entropy_nats: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Mean row entropy in nats (any shape) over ``num_tokens`` keys -> the same, divided by log T."""
    return entropy_nats / math.log(num_tokens) if num_tokens > 1 else torch.ones_like(entropy_nats)


def uniform_note(norm_entropy: torch.Tensor, what: str, threshold: float = UNIFORM_THRESHOLD) -> str | None:
    """The figure's note when any of the maps is near uniform, else None (peaked maps get none)."""
    flat = norm_entropy.flatten()
    near = int((flat > threshold).sum())
    if not near:
        return None
    return (f"near-uniform attention: {near} of {flat.numel()} {what} have normalised entropy > {threshold:g} "
            f"(max {float(flat.max()):.3f}); flat colour here means 'everywhere', not a shape")


def near_uniform_blocks(block_entropy: torch.Tensor, threshold: float = UNIFORM_THRESHOLD) -> list[int]:
    """(L,) normalised row entropy per block -> 0-based indices of the near-uniform blocks."""
    return [i for i, v in enumerate(block_entropy.tolist()) if v > threshold]
