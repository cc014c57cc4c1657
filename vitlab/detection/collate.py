"""Batches of differently sized images: zero-pad to the largest, with a padding mask."""

from __future__ import annotations

from typing import Any

import torch


def pad_images(images: list[torch.Tensor], size_divisibility: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H_i, W_i) tensors -> batch (B, 3, H, W) zero-padded at bottom/right, mask (B, H, W) True on padding."""
    H = max(im.shape[-2] for im in images)
    W = max(im.shape[-1] for im in images)
    if size_divisibility > 1:
        H = -(-H // size_divisibility) * size_divisibility
        W = -(-W // size_divisibility) * size_divisibility
    batch = images[0].new_zeros(len(images), images[0].shape[0], H, W)
    mask = torch.ones(len(images), H, W, dtype=torch.bool)
    for i, im in enumerate(images):
        h, w = im.shape[-2:]
        batch[i, :, :h, :w] = im
        mask[i, :h, :w] = False
    return batch, mask


def collate_detection(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """DataLoader collate: -> (images (B, 3, H, W), mask (B, H, W), list of B target dicts)."""
    images, targets = zip(*batch)
    x, mask = pad_images(list(images))
    return x, mask, list(targets)
