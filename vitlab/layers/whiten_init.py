"""Patch-whitening initialisation of the convolution that first sees the image.

The filters become the principal directions of the training images' own k x k patches, scaled by
1 / sqrt(eigenvalue + eps), each with its negative (``[+w, -w]``, so a following ReLU keeps both signs):
the layer starts as a whitening transform of its input patches instead of random projections.
This is the patch-whitening first layer of the fast CIFAR-10 training line of work (Page's
"How to train your ResNet", 2018; Jordan's airbench, 2024), applied here to a ViT's token stem.
Only the weights change; the layer stays trainable.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def first_image_conv(model: nn.Module, in_chans: int) -> nn.Conv2d:
    """The first ``nn.Conv2d`` (in module order) that reads ``in_chans`` channels: the image's.

    Raises ValueError when the model has none, or when that conv is grouped, dilated or padded by
    name ("same" / "valid") (its patches are then not the plain k x k x C ones this init whitens).
    """
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == in_chans), None)
    if conv is None:
        raise ValueError(f"the model has no convolution over the {in_chans}-channel image to whiten "
                         "(init.whiten_images needs a conv or patch-embedding stem)")
    if conv.groups != 1 or conv.dilation != (1, 1) or isinstance(conv.padding, str):
        raise ValueError(f"the image's first convolution ({conv}) is grouped or dilated, or padded by name; "
                         "init.whiten_images whitens plain k x k patches only")
    return conv


def patch_covariance(images: torch.Tensor | Iterable[torch.Tensor], conv: nn.Conv2d) -> torch.Tensor:
    """(N, C, H, W) images, or an iterable of such batches, normalised as the model sees them ->
    the (C*k*k, C*k*k) covariance of the patches ``conv`` reads (its kernel, stride and padding), in
    ``conv.weight``'s flattening order.

    Moments are summed batch by batch in float64, so memory is one batch's patches, not all of them
    (5,000 images at 224 with 16x16 patches would be ~6 GB unfolded at once).
    """
    d = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    total, outer, count = torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64), 0
    for batch in [images] if isinstance(images, torch.Tensor) else images:
        patches = F.unfold(batch.double(), conv.kernel_size, padding=conv.padding, stride=conv.stride)  # (n, D, L)
        flat = patches.transpose(1, 2).reshape(-1, d)  # (n*L, D)
        total += flat.sum(0)
        outer += flat.T @ flat
        count += flat.shape[0]
    if count < 2:
        raise ValueError("init.whiten_images: no image patches to estimate a covariance from")
    mean = total / count
    return (outer - count * torch.outer(mean, mean)) / (count - 1)


@torch.no_grad()
def whiten_conv_(conv: nn.Conv2d, images: torch.Tensor | Iterable[torch.Tensor], eps: float = 1e-2) -> int:
    """Set ``conv``'s weights to whitening filters of ``images``' patches; returns how many pairs.

    With D = C*k*k patch dimensions and O output channels, the top ``min(D, O // 2)`` eigenvectors
    v_i of the patch covariance give the filter pairs ``+-v_i / sqrt(lambda_i + eps)``; channels
    beyond ``2 * D`` (or an odd last one) keep their initial weights. A bias, if any, is zeroed.

    Args:
        conv: the image's first convolution (``first_image_conv``).
        images: (N, C, H, W) training images normalised as the model sees them, or an iterable of
            such batches.
        eps: added to every eigenvalue; pixels are normalised to ~unit variance, so 1e-2 caps the
            gain of the flattest patch directions at 10 (1 / sqrt(1e-2)) instead of amplifying noise.
    """
    cov = patch_covariance(images, conv)
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    pairs = min(cov.shape[0], conv.out_channels // 2)
    lead = eigvecs[:, -pairs:].flip(1).T  # (pairs, D), largest variance first
    filters = lead / torch.sqrt(eigvals[-pairs:].flip(0).clamp(min=0) + eps)[:, None]
    w = torch.cat([filters, -filters]).reshape(2 * pairs, *conv.weight.shape[1:])
    conv.weight[: 2 * pairs].copy_(w.to(conv.weight.dtype))
    if conv.bias is not None:
        conv.bias.zero_()
    return pairs
