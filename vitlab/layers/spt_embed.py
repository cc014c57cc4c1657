"""Shifted Patch Tokenization (Lee et al. 2021, "Vision Transformer for Small-Size Datasets", Sec. 3.1).

The image is concatenated on channels with four copies of itself shifted by half a patch in the
four diagonal directions (zeros fill what is shifted in), so every P x P patch also sees the pixels
of its neighbours; the 5C-channel image is cut into patches, each flattened patch is normalised by
a LayerNorm and projected linearly to the token width (the paper's Eq. 2-3). This widens each
token's receptive field at the cost of a 5x wider first linear layer only.

The layout follows the authors' code (aanna0701/SPT_LSA_ViT, ``PatchShifting`` +
``ShiftedPatchTokenization``): channel blocks [x, left-up, right-up, left-down, right-down], and a
patch flattened as (row-in-patch, column-in-patch, channel).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.layers.args import ArgError
from vitlab.layers.patch_embed import EmbedFactory, TokenEmbed


def diagonal_shifts(x: torch.Tensor, shift: int) -> torch.Tensor:
    """x: (B, C, H, W) -> (B, 5C, H, W): x and its four diagonal shifts by ``shift`` pixels, zero-filled.

    Block k of C channels holds, at (i, j), the pixel (i - di, j - dj) of x for
    (di, dj) = (0, 0), (s, s), (s, -s), (-s, s), (-s, -s): the views towards the left-up,
    right-up, left-down and right-down neighbours, as the authors' ``PatchShifting``.
    """
    s = shift
    padded = F.pad(x, (s, s, s, s))  # (B, C, H + 2s, W + 2s)
    lu = padded[..., : -2 * s, : -2 * s]
    ru = padded[..., : -2 * s, 2 * s :]
    lb = padded[..., 2 * s :, : -2 * s]
    rb = padded[..., 2 * s :, 2 * s :]
    return torch.cat([x, lu, ru, lb, rb], dim=1)


class ShiftedPatchEmbed(TokenEmbed):
    """Shifted patches -> LayerNorm -> linear: (B, C, H, W) -> (B, H/P * W/P, D).

    Args:
        img_size: (H, W) input size, each divisible by ``patch_size``.
        patch_size: P.
        in_chans: input channels C.
        embed_dim: token width D.
        shift: pixels of each diagonal shift; the paper uses half a patch (P // 2).
        norm_eps: epsilon of the LayerNorm over the 5 C P^2 patch values.
    """

    def __init__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int,
                 shift: int, norm_eps: float = 1e-5) -> None:
        super().__init__(img_size, patch_size)
        if not 0 < shift < min(self.img_size):
            raise ValueError(f"shift {shift} must be in [1, {min(self.img_size) - 1}] for images of {self.img_size}")
        self.shift = shift
        patch_dim = 5 * in_chans * patch_size * patch_size
        self.norm = nn.LayerNorm(patch_dim, eps=norm_eps)
        self.proj = nn.Linear(patch_dim, embed_dim)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> flattened shifted patches (B, N, P * P * 5C), row-major over the grid."""
        self.check_input(x)
        z = diagonal_shifts(x, self.shift)  # (B, 5C, H, W)
        B, C5, H, W = z.shape
        P = self.patch_size
        z = z.reshape(B, C5, H // P, P, W // P, P).permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p1, p2, 5C)
        return z.reshape(B, (H // P) * (W // P), P * P * C5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, N, D)."""
        return self.proj(self.norm(self.patches(x)))


@dataclass(frozen=True)
class ShiftedPatchStemArgs:
    """Stem ``"spt"``: :class:`ShiftedPatchEmbed`; ``shift`` 0 means the paper's half patch (P // 2)."""

    shift: int = 0

    def check(self, patch_size: int) -> None:
        if self.shift < 0:
            raise ArgError("shift", f"must be >= 0 (0: half the patch), got {self.shift}")
        if self.shift == 0 and patch_size < 2:
            raise ArgError("shift", f"half of patch_size {patch_size} is 0 pixels; give shift >= 1")

    def layer(self) -> EmbedFactory:
        return _SptFactory(self.shift)


@dataclass(frozen=True)
class _SptFactory:
    """(img_size, patch_size, in_chans, embed_dim) -> ShiftedPatchEmbed, resolving shift 0 to P // 2."""

    shift: int

    def __call__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int) -> ShiftedPatchEmbed:
        return ShiftedPatchEmbed(img_size, patch_size, in_chans, embed_dim, shift=self.shift or patch_size // 2)
