"""DeepViT-S / -L's convolutional patch embedding (the authors' ``PatchEmbed_CNN``, after T2T-ViT).

7x7 / 2 conv + BatchNorm + ReLU, 3x3 conv + BatchNorm + ReLU (both bias-free, ``width``
channels), then a (P/2) x (P/2) convolution with stride P/2 to the token width: P x P pixels per
token overall, like the linear patch projection, but with a small convolutional front end.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from vitlab.layers.args import ArgError
from vitlab.layers.patch_embed import EmbedFactory, TokenEmbed


class CnnPatchEmbed(TokenEmbed):
    """Conv front end (stride 2) + strided (P/2) projection: (B, C, H, W) -> (B, H/P * W/P, D).

    Args:
        img_size: (H, W), each divisible by ``patch_size``.
        patch_size: P, even.
        in_chans: input channels C.
        embed_dim: token width D.
        width: channels of the two front-end convolutions (64 in DeepViT).
    """

    def __init__(
        self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int, width: int = 64
    ) -> None:
        super().__init__(img_size, patch_size)
        if patch_size % 2:
            raise ValueError(f"the convolutional patch embedding needs an even patch size, got {patch_size}")
        # Names as in the authors' code (conv1, bn1, conv2, bn2, proj) so their weights map 1:1.
        self.conv1 = nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act = nn.ReLU()
        self.proj = nn.Conv2d(width, embed_dim, kernel_size=patch_size // 2, stride=patch_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, H/P * W/P, D), row-major over the grid."""
        self.check_input(x)
        x = self.act(self.bn1(self.conv1(x)))  # (B, width, H/2, W/2)
        x = self.act(self.bn2(self.conv2(x)))
        return self.proj(x).flatten(2).transpose(1, 2)


@dataclass(frozen=True)
class CnnStemArgs:
    """Stem ``"cnn"``: :class:`CnnPatchEmbed` (DeepViT-S / -L); ``width`` channels of the front end."""

    width: int = 64

    def check(self, patch_size: int) -> None:
        if patch_size % 2:
            raise ArgError(None, f"stem 'cnn' needs an even patch_size, got {patch_size}")
        if self.width < 1:
            raise ArgError("width", f"must be >= 1, got {self.width}")

    def layer(self) -> EmbedFactory:
        return functools.partial(CnnPatchEmbed, width=self.width)
