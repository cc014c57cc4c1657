"""Position embeddings: fixed 2-D sin-cos tables and resampling to a new grid."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

ResampleMethod = Literal["bicubic", "bilinear", "nearest", "area"]


def sincos_2d(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (MAE / big_vision ``posemb_sincos_2d``).

    A quarter of the channels each hold sin(y), cos(y), sin(x), cos(x) at geometric frequencies.

    Returns:
        (gh * gw, dim) float32 table in row-major grid order.
    """
    if dim % 4 != 0:
        raise ValueError(f"sin-cos 2-D position embedding needs dim divisible by 4, got {dim}")
    gh, gw = grid
    y, x = torch.meshgrid(torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1)


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
    method: ResampleMethod = "bicubic",
    antialias: bool = True,
    align_corners: bool = False,
) -> torch.Tensor:
    """Resample a learned position embedding to a new patch grid (ViT paper, section 3.2).

    The prefix entries (class / distillation tokens) are kept as they are; the grid part is
    reshaped to (1, D, gh, gw), interpolated in 2-D and flattened back. Resampling to the same
    grid returns the input unchanged.

    Args:
        pos_embed: (1, num_prefix_tokens + gh * gw, D).
        new_grid: target (gh', gw').
        old_grid: source (gh, gw); gh * gw must match the grid entries of ``pos_embed``.
        num_prefix_tokens: leading entries that are not part of the grid.
        method: interpolation mode for ``F.interpolate``.
        antialias: anti-aliasing when downsampling (bilinear / bicubic only).
        align_corners: passed to ``F.interpolate`` for bilinear / bicubic.

    Returns:
        (1, num_prefix_tokens + gh' * gw', D) in the input's dtype.
    """
    new_grid, old_grid = tuple(new_grid), tuple(old_grid)
    n_grid = pos_embed.shape[1] - num_prefix_tokens
    if old_grid[0] * old_grid[1] != n_grid:
        raise ValueError(f"pos_embed has {n_grid} grid entries, which is not the grid {old_grid}")
    if new_grid == old_grid:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    orig_dtype = grid.dtype
    grid = grid.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)  # (1, D, gh, gw)
    kwargs: dict = {}
    if method in ("bilinear", "bicubic"):
        kwargs = {"align_corners": align_corners, "antialias": antialias}
    grid = F.interpolate(grid, size=new_grid, mode=method, **kwargs)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(orig_dtype)
    return torch.cat([prefix, grid], dim=1)
