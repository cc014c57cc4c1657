"""Per-sample deterministic augmentation, independent of workers and of resumption.

Each sample's random transform runs under the CPU torch RNG seeded from (run seed, epoch, index);
the generator's previous state is put back afterwards, so the caller's RNG stream (dropout,
stochastic depth) is untouched. The
same sample therefore gets the same augmentation whether it is loaded in the main process or in
any data-loader worker, and whether the run was interrupted or not: the basis of exact resume.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from vitlab.utils.seeding import epoch_seed


class SeededTransform(Dataset):
    """Wrap a dataset that yields (image, label) without transform; apply ``transform`` seeded.

    Args:
        dataset: yields (raw image, label); its own transform must be None.
        transform: the (random) transform to apply.
        seed: run seed.
    """

    def __init__(self, dataset: Dataset, transform: Callable | None, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed
        self.epoch = 0
        self.classes = getattr(dataset, "classes", None)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's augmentation stream (call before creating the epoch's loader)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index]
        if self.transform is None:
            return image, label
        # The CPU generator directly: torch.manual_seed / fork_rng also visit the CUDA generators
        # and cost ~0.7 ms per call on a CUDA build, more than the transform itself. The
        # transforms draw only from torch's RNG (not Python's random).
        gen = torch.default_generator
        state = gen.get_state()
        gen.manual_seed(epoch_seed(epoch_seed(self.seed, self.epoch), index))
        try:
            return self.transform(image), label
        finally:
            gen.set_state(state)


class SeededSamples(Dataset):
    """Run ``dataset[index]`` (which applies its own random transform) under RNGs seeded from
    (run seed, epoch, index): torch's CPU generator and Python's ``random`` (the detection
    transforms draw from both). The callers' streams are put back afterwards."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0
        self.classes = getattr(dataset, "classes", None)
        self.skipped = getattr(dataset, "skipped", {})

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        import random

        seed = epoch_seed(epoch_seed(self.seed, self.epoch), index)
        gen, torch_state, py_state = torch.default_generator, torch.default_generator.get_state(), random.getstate()
        gen.manual_seed(seed)
        random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            gen.set_state(torch_state)
            random.setstate(py_state)
