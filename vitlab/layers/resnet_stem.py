"""A BiT-style ResNetV2 feature extractor as a ViT token embedding (the ViT paper's hybrid, Sec. 3.1).

The ViT paper's hybrid feeds the transformer with the feature map of a ResNet instead of raw
patches: "the patch embedding projection E is applied to patches extracted from a CNN feature
map"; with 1x1 patches, each feature-map cell becomes a token. Its ResNet is BiT's (Kolesnikov et
al. 2020): weight-standardised convolutions and GroupNorm instead of BatchNorm, with TensorFlow
"SAME" padding. R50 uses the first three stages (3, 4, 9 blocks: stride 16, 1024 channels); R26
uses four (2, 2, 2, 2: stride 32, 2048 channels).

Module and parameter names follow timm's ``ResNetV2`` / ``HybridEmbed`` (``backbone.stem.conv``,
``backbone.stages.{i}.blocks.{j}.conv1`` ..., ``proj``), so timm's hybrid state dicts load
without renaming.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.layers.args import ArgError
from vitlab.layers.patch_embed import EmbedFactory, TokenEmbed


def pad_same(x: torch.Tensor, kernel: int, stride: int, dilation: int = 1, value: float = 0.0) -> torch.Tensor:
    """TensorFlow "SAME" padding: output size ceil(in / stride), extra pixel at the bottom / right."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last axis first
        total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardisation (Qiao et al. 2019) and "SAME" padding, bias-free.

    Each output filter is normalised to zero mean and unit variance over (C_in, k, k) before the
    convolution. Stride-1 odd kernels use static symmetric padding, the rest pad dynamically.

    Args:
        in_chans, out_chans, kernel_size, stride: as ``nn.Conv2d``.
        eps: added to the filter variance (1e-8 in the ViT hybrids).
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, stride: int = 1, eps: float = 1e-8) -> None:
        self.dynamic_pad = stride > 1 or kernel_size % 2 == 0
        padding = 0 if self.dynamic_pad else (kernel_size - 1) // 2
        super().__init__(in_chans, out_chans, kernel_size, stride=stride, padding=padding, bias=False)
        self.eps = eps

    def standardized_weight(self) -> torch.Tensor:
        w = self.weight.reshape(self.out_channels, -1)
        var, mean = torch.var_mean(w, dim=1, keepdim=True, unbiased=False)
        return ((w - mean) / torch.sqrt(var + self.eps)).reshape_as(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, ceil(H / s), ceil(W / s))."""
        if self.dynamic_pad:
            x = pad_same(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, self.standardized_weight(), None, self.stride, self.padding)


class GroupNormAct(nn.GroupNorm):
    """GroupNorm (32 groups) followed by ReLU unless ``act`` is False."""

    def __init__(self, channels: int, groups: int = 32, eps: float = 1e-5, act: bool = True) -> None:
        super().__init__(groups, channels, eps=eps)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return F.relu(x) if self.act else x


class MaxPoolSame(nn.Module):
    """3x3 / 2 max pooling with "SAME" padding (padded with -inf, as TensorFlow does)."""

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size, self.stride, value=-float("inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


class Downsample(nn.Module):
    """Projection shortcut: 1x1 StdConv (strided) + GroupNorm without activation."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, eps: float) -> None:
        super().__init__()
        self.conv = StdConv2d(in_chans, out_chans, 1, stride=stride, eps=eps)
        self.norm = GroupNormAct(out_chans, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class Bottleneck(nn.Module):
    """Post-activation bottleneck (1x1, 3x3 strided, 1x1; GroupNorm after each), as in the hybrids."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, eps: float) -> None:
        super().__init__()
        mid = out_chans // 4
        needs_proj = stride != 1 or in_chans != out_chans
        self.downsample = Downsample(in_chans, out_chans, stride, eps) if needs_proj else None
        self.conv1 = StdConv2d(in_chans, mid, 1, eps=eps)
        self.norm1 = GroupNormAct(mid)
        self.conv2 = StdConv2d(mid, mid, 3, stride=stride, eps=eps)
        self.norm2 = GroupNormAct(mid)
        self.conv3 = StdConv2d(mid, out_chans, 1, eps=eps)
        self.norm3 = GroupNormAct(out_chans, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, H / s, W / s)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.norm1(self.conv1(x))
        x = self.norm2(self.conv2(x))
        x = self.norm3(self.conv3(x))
        return F.relu(x + shortcut)


class ResNetStage(nn.Module):
    """``depth`` bottlenecks; the first one changes width and stride."""

    def __init__(self, in_chans: int, out_chans: int, depth: int, stride: int, eps: float) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(
            Bottleneck(in_chans if i == 0 else out_chans, out_chans, stride if i == 0 else 1, eps) for i in range(depth)
        ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ResNetV2(nn.Module):
    """BiT ResNetV2 trunk without head: 7x7/2 StdConv + GroupNorm + ReLU + 3x3/2 max-pool, then stages.

    Stage i has ``layers[i]`` bottlenecks with ``4 * width * 2**i`` output channels; stage 0 keeps
    the stride-4 resolution, each later stage halves it. Output stride ``4 * 2**(len(layers) - 1)``.

    Args:
        layers: bottlenecks per stage, e.g. (3, 4, 9) for R50's first three stages.
        in_chans: input channels.
        width: stem channels (64 for the standard width).
        eps: weight-standardisation epsilon.
    """

    def __init__(self, layers: tuple[int, ...], in_chans: int = 3, width: int = 64, eps: float = 1e-8) -> None:
        super().__init__()
        if not layers or any(d < 1 for d in layers):
            raise ValueError(f"layers must be a non-empty tuple of positive block counts, got {layers!r}")
        self.stem = nn.Sequential()
        self.stem.add_module("conv", StdConv2d(in_chans, width, 7, stride=2, eps=eps))
        self.stem.add_module("norm", GroupNormAct(width))
        self.stem.add_module("pool", MaxPoolSame(3, 2))
        self.stages = nn.Sequential()
        prev = width
        for i, depth in enumerate(layers):
            out = 4 * width * 2**i
            self.stages.add_module(str(i), ResNetStage(prev, out, depth, stride=1 if i == 0 else 2, eps=eps))
            prev = out
        self.num_features = prev
        self.stride = resnet_stride(layers)
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, num_features, H / stride, W / stride) for H, W divisible by stride."""
        return self.stages(self.stem(x))


def resnet_stride(layers: tuple[int, ...]) -> int:
    """Output stride of :class:`ResNetV2` with these stages: 4 (stem) * 2 per stage after the first."""
    return 4 * 2 ** (len(layers) - 1)


class ResNetV2Embed(TokenEmbed):
    """Hybrid token embedding: ResNetV2 feature map -> 1x1 projection -> one token per cell.

    ``patch_size`` is the total stride of the ResNet (16 for three stages, 32 for four); each
    cell of its (H / P) x (W / P) feature map becomes a token, as with 1x1 patches in the paper.

    Args:
        img_size: (H, W), each divisible by the stride.
        patch_size: must equal the ResNet's output stride.
        in_chans: input channels C.
        embed_dim: token width D.
        layers: bottlenecks per ResNet stage.
        width: ResNet stem channels.
    """

    def __init__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int,
                 layers: tuple[int, ...], width: int = 64) -> None:
        super().__init__(img_size, patch_size)
        if resnet_stride(layers) != patch_size:
            raise ValueError(f"a ResNet with {len(layers)} stages has stride {resnet_stride(layers)}, "
                             f"not the patch size {patch_size}")
        self.backbone = ResNetV2(layers, in_chans, width)
        self.proj = nn.Conv2d(self.backbone.num_features, embed_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, H/P * W/P, D), row-major over the feature map."""
        self.check_input(x)
        return self.proj(self.backbone(x)).flatten(2).transpose(1, 2)


@dataclass(frozen=True)
class ResNetV2StemArgs:
    """Stem ``"resnetv2"``: :class:`ResNetV2Embed`; bottlenecks per stage and the stem width.

    ``layers`` sets the stride (4 * 2 ** (stages - 1)), which must equal the ViT's patch_size,
    e.g. (3, 4, 9) for R50 at 16, (2, 2, 2, 2) for R26 at 32.
    """

    layers: tuple[int, ...] = ()
    width: int = 64

    def check(self, patch_size: int) -> None:
        stride = 4 * 2 ** max(len(self.layers) - 1, 0)
        if not self.layers or stride != patch_size:
            raise ArgError("layers", f"{self.layers} give a ResNet of stride {stride}, not patch_size {patch_size}")
        if min(self.layers) < 1:
            raise ArgError("layers", f"block counts must be >= 1, got {self.layers}")
        if self.width < 1:
            raise ArgError("width", f"must be >= 1, got {self.width}")

    def layer(self) -> EmbedFactory:
        return functools.partial(ResNetV2Embed, layers=tuple(self.layers), width=self.width)
