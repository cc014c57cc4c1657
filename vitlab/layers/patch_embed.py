"""Token embeddings: the ViT paper's linear patch projection and a convolutional stem.

Both map an image (B, C, H, W) to tokens (B, N, D) on a (H / P) x (W / P) grid and can be
swapped into :class:`vitlab.models.vit.VisionTransformer` as its ``embed_layer``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vitlab.layers.args import ArgError


def to_2tuple(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``224`` -> ``(224, 224)``; a pair is returned as a tuple."""
    if isinstance(size, int):
        return (size, size)
    if len(size) != 2:
        raise ValueError(f"expected an int or a (height, width) pair, got {size!r}")
    return (int(size[0]), int(size[1]))


def grid_for(img_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """The patch grid of an image size; raises ValueError when it does not divide evenly."""
    h, w = img_size
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {patch_size}")
    return (h // patch_size, w // patch_size)


class TokenEmbed(nn.Module):
    """Shared bookkeeping: image size, patch size and grid, checked on every forward."""

    def __init__(self, img_size: tuple[int, int], patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.img_size = to_2tuple(img_size)
        self.grid_size = grid_for(self.img_size, patch_size)

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def set_input_size(self, img_size: tuple[int, int]) -> None:
        """Change the expected input size (the weights do not depend on it)."""
        self.grid_size = grid_for(to_2tuple(img_size), self.patch_size)
        self.img_size = to_2tuple(img_size)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"expected input (B, C, {self.img_size[0]}, {self.img_size[1]}), got {tuple(x.shape)}; "
                "call set_input_size() to run at another resolution"
            )


class PatchEmbed(TokenEmbed):
    """Split into P x P patches and project each with one shared linear map (a strided conv).

    Args:
        img_size: (H, W) input size, each divisible by ``patch_size``.
        patch_size: P.
        in_chans: input channels C.
        embed_dim: token width D.
    """

    def __init__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__(img_size, patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, H/P * W/P, D), row-major over the grid."""
        self.check_input(x)
        return self.proj(x).flatten(2).transpose(1, 2)


class ConvStemEmbed(TokenEmbed):
    """A stack of stride-2 3x3 conv + BatchNorm + ReLU, then a 1x1 projection to D.

    Early convolutions (Xiao et al. 2021) in place of the patchify layer; a light form of the
    ViT paper's hybrid. ``2 ** len(channels)`` must equal ``patch_size``. ``extra`` stride-1 3x3
    conv + BN + ReLU layers at the last width (on the token grid) deepen the stem, as Xiao et al.'s
    stems do, for more locality before the first attention layer.

    Args:
        img_size: (H, W) input size.
        patch_size: total downsampling factor P.
        in_chans: input channels C.
        embed_dim: token width D.
        channels: output channels of each stride-2 conv.
        extra: stride-1 3x3 convs after them (0: none, the layout of older checkpoints).
    """

    def __init__(
        self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int, channels: tuple[int, ...],
        extra: int = 0,
    ) -> None:
        super().__init__(img_size, patch_size)
        if not channels or 2 ** len(channels) != patch_size:
            raise ValueError(f"a conv stem with {len(channels)} stride-2 convs downsamples by "
                             f"{2 ** len(channels)}, not by the patch size {patch_size}")
        layers: list[nn.Module] = []
        prev = in_chans
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
            prev = ch
        for _ in range(extra):
            layers += [nn.Conv2d(prev, prev, 3, padding=1, bias=False), nn.BatchNorm2d(prev), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(prev, embed_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, H/P * W/P, D)."""
        self.check_input(x)
        return self.proj(self.stem(x)).flatten(2).transpose(1, 2)


EmbedFactory = Callable[..., TokenEmbed]  # (img_size, patch_size, in_chans, embed_dim) -> TokenEmbed


@dataclass(frozen=True)
class PatchStemArgs:
    """Stem ``"patch"``: the paper's linear patch projection; it has no arguments."""

    def check(self, patch_size: int) -> None:
        """Any patch size works."""

    def layer(self) -> EmbedFactory:
        return PatchEmbed


@dataclass(frozen=True)
class ConvStemArgs:
    """Stem ``"conv"``: :class:`ConvStemEmbed`; ``channels`` of each stride-2 conv, 2 ** len = P;
    ``extra`` stride-1 3x3 convs after them."""

    channels: tuple[int, ...] = ()
    extra: int = 0

    def check(self, patch_size: int) -> None:
        factor = 2 ** len(self.channels)
        if not self.channels or factor != patch_size or min(self.channels) < 1:
            raise ArgError("channels", f"{self.channels} downsample by {factor}, not by patch_size {patch_size}")
        if self.extra < 0:
            raise ArgError("extra", f"must be >= 0, got {self.extra}")

    def layer(self) -> EmbedFactory:
        return functools.partial(ConvStemEmbed, channels=tuple(self.channels), extra=self.extra)
