"""Where each token sits: prefix tokens first, then the patch grid in row-major order."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vitlab.errors import ConfigError


@dataclass(frozen=True)
class TokenLayout:
    """Token geometry of a ViT: ``num_prefix`` class/register tokens, then a ``grid`` of patches."""

    num_prefix: int
    grid: tuple[int, int]  # (gh, gw)
    patch_size: int  # pixels per patch side

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.num_patches

    def check(self, attn: torch.Tensor) -> None:
        """Raise ConfigError unless ``attn`` is (..., T, T) with T = num_tokens."""
        if attn.shape[-1] != self.num_tokens or attn.shape[-2] != self.num_tokens:
            raise ConfigError(f"attention of shape {tuple(attn.shape)} does not fit {self.num_prefix} prefix "
                              f"tokens + a {self.grid[0]}x{self.grid[1]} grid")

    def patch_centres(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """(N, 2) pixel coordinates (row, col) of each patch centre, row-major like the tokens."""
        gh, gw = self.grid
        rows = (torch.arange(gh, dtype=dtype) + 0.5) * self.patch_size
        cols = (torch.arange(gw, dtype=dtype) + 0.5) * self.patch_size
        return torch.cartesian_prod(rows, cols)

    def patch_distances(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """(N, N) Euclidean distances in pixels between patch centres."""
        c = self.patch_centres(dtype)
        return torch.cdist(c, c)


def layout_of(model: nn.Module) -> TokenLayout:
    """The token layout of a VisionTransformer-like model (``patch_embed`` + ``num_prefix_tokens``)."""
    embed = getattr(model, "patch_embed", None)
    if embed is None or not hasattr(embed, "grid_size"):
        raise ConfigError(f"{type(model).__name__} has no patch_embed with a grid_size; analysis needs a ViT")
    return TokenLayout(int(getattr(model, "num_prefix_tokens", 1)), tuple(embed.grid_size), int(embed.patch_size))
