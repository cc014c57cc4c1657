"""Train / validation / test kept apart: a seeded, stratified validation carve-out from train.

When a source has no validation split of its own, vitlab takes ``val_fraction`` of every class of
the training split (chosen by a generator seeded with ``split_seed``, not the run seed, so runs
with different seeds validate on the same images) and trains on the rest. The two views never
share an index, and the carve-out is a pure function of (labels, fraction, seed), so the train
view and the val view, opened separately with different transforms, always agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from vitlab.errors import DataError


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, val indices), both sorted: per class, ``round(fraction * n)`` samples (at least
    one when the class has two or more) go to val, chosen by a generator seeded with ``seed``."""
    if not 0 < fraction < 1:
        raise DataError(f"data.val_fraction={fraction}: must be in (0, 1) to carve a validation split")
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(labels):
        by_class.setdefault(int(c), []).append(i)
    gen = torch.Generator().manual_seed(seed)
    val: list[int] = []
    for c in sorted(by_class):
        members = by_class[c]
        k = min(max(round(fraction * len(members)), 1 if len(members) >= 2 else 0), len(members) - 1)
        order = torch.randperm(len(members), generator=gen)[:k].tolist()
        val += [members[j] for j in order]
    chosen = set(val)
    return [i for i in range(len(labels)) if i not in chosen], sorted(val)


def labels_of(dataset: Any) -> list[int]:
    """The class label of every sample, read without loading images."""
    for attr in ("targets", "labels"):
        values = getattr(dataset, attr, None)
        if values is not None:
            return [int(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        return [int(s[1]) for s in samples]
    raise DataError(f"cannot read the labels of {type(dataset).__name__} to carve a validation split; "
                    "give one with --val")


class SplitView(Dataset):
    """The samples ``indices`` of ``base`` (a train or val view of a carve-out); keeps ``classes``.

    Args:
        base: the whole training split, yielding ``(image, label)``.
        indices: which of its samples this view holds.
        role: "train" or "val", for messages.
        labels: ``base``'s labels when the caller has them already (else read again).
    """

    def __init__(self, base: Dataset, indices: Sequence[int], role: str, labels: Sequence[int] | None = None) -> None:
        self.base, self.indices, self.role = base, list(indices), role
        self.classes = getattr(base, "classes", None)
        labels = labels if labels is not None else labels_of(base)
        self.targets = [labels[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.base[self.indices[index]]


def carve(base: Dataset, role: str, fraction: float, seed: int) -> SplitView:
    """The ``role`` ("train" or "val") view of the seeded, stratified carve-out of ``base``."""
    labels = labels_of(base)
    train, val = stratified_split(labels, fraction, seed)
    return SplitView(base, train if role == "train" else val, role, labels)
