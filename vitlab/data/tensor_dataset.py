"""A classification dataset over images already in memory (the bundled MNIST, tests)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from vitlab.errors import DataError


class TensorImageDataset(Dataset):
    """Images (N, C, H, W) uint8 with labels (N,); items are ``(transform(image), label)``.

    Without a transform the item is the uint8 tensor (C, H, W) itself (a view, not a copy).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: list[str],
        transform: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        if images.ndim != 4:
            raise DataError(f"TensorImageDataset: images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"TensorImageDataset: {len(images)} images but labels of shape {tuple(labels.shape)}")
        self.images = images
        self.labels = labels
        self.classes = list(classes)
        self.targets: list[int] = labels.tolist()
        if self.targets and not 0 <= min(self.targets) <= max(self.targets) < len(self.classes):
            raise DataError(f"TensorImageDataset: labels span {min(self.targets)}..{max(self.targets)} "
                            f"but there are {len(self.classes)} classes")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform is not None else image), self.targets[index]
