"""Where each token sits: prefix tokens first, then the patch grid in row-major order.

The prefix is, in order: the class token (if any), DeiT's distillation token (if any), then the
register tokens ("Vision Transformers Need Registers", Darcet et al. 2024), as timm and vitlab
lay them out. Registers are not patches: they have no position on the grid, so every analysis
that is about the image (maps, rollout saliency, mean distance, outliers) reads the patch slice,
and reports what goes to the prefix tokens apart (see :mod:`vitlab.analysis.prefix`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vitlab.errors import ConfigError


@dataclass(frozen=True)
class TokenLayout:
    """Token geometry of a ViT: ``num_prefix`` class/distillation/register tokens, then a ``grid`` of patches.

    ``class_token``: whether token 0 is a class token; None (the default) means "yes when the prefix
    holds anything but registers". ``num_registers``: the last prefix tokens, right before the patches.
    """

    num_prefix: int
    grid: tuple[int, int]  # (gh, gw)
    patch_size: int  # pixels per patch side
    class_token: bool | None = None
    num_registers: int = 0

    def __post_init__(self) -> None:
        if self.num_prefix < 0 or not 0 <= self.num_registers <= self.num_prefix:
            raise ConfigError(f"token layout: {self.num_registers} register(s) do not fit {self.num_prefix} "
                              "prefix token(s)")
        if self.class_token is None:  # frozen: resolve the default once
            object.__setattr__(self, "class_token", self.num_prefix > self.num_registers)
        if self.class_token and self.num_prefix - self.num_registers < 1:
            raise ConfigError(f"token layout: a class token does not fit {self.num_prefix} prefix token(s) "
                              f"of which {self.num_registers} are registers")

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.num_patches

    def groups(self) -> dict[str, slice]:
        """Token index ranges by kind, only the kinds present: ``class``, ``dist``, ``registers``, ``patches``.

        ``dist`` holds the prefix tokens that are neither the class token nor a register (DeiT's
        distillation token in vitlab).
        """
        c, p, r = int(bool(self.class_token)), self.num_prefix, self.num_registers
        spans = {"class": slice(0, c), "dist": slice(c, p - r), "registers": slice(p - r, p),
                 "patches": slice(p, self.num_tokens)}
        return {k: s for k, s in spans.items() if s.stop > s.start}

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
    """The token layout of a VisionTransformer-like model.

    Read from the model, never assumed: ``patch_embed.grid_size`` / ``patch_size``, ``num_prefix_tokens``
    (class + distillation + registers), ``num_reg_tokens`` (0 when absent) and whether ``cls_token`` is set.
    """
    embed = getattr(model, "patch_embed", None)
    if embed is None or not hasattr(embed, "grid_size"):
        raise ConfigError(f"{type(model).__name__} has no patch_embed with a grid_size; analysis needs a ViT")
    if not hasattr(model, "num_prefix_tokens"):
        raise ConfigError(f"{type(model).__name__} does not say how many prefix tokens it has (num_prefix_tokens)")
    cls = (getattr(model, "cls_token", None) is not None) if hasattr(model, "cls_token") else None
    return TokenLayout(int(model.num_prefix_tokens), tuple(embed.grid_size), int(embed.patch_size),
                       class_token=cls, num_registers=int(getattr(model, "num_reg_tokens", 0) or 0))
