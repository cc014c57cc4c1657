"""A shuffling sampler whose position is part of the checkpoint.

The order of epoch ``e`` is a permutation drawn from a generator seeded with ``(seed, e)``, so it
never depends on what ran before; resuming at step ``s`` of an epoch skips the first ``s``
global batches without touching the data. Under data parallelism each global batch is split
between the ranks, so N processes see exactly the samples that one process would see in the
same step with the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from vitlab.utils.seeding import epoch_seed

__all__ = ["ResumableSampler", "epoch_seed"]  # epoch_seed re-exported: callers import it from here


class ResumableSampler(Sampler[int]):
    """Indices of one epoch, batch by batch, for one rank.

    Args:
        size: number of samples in the dataset.
        global_batch: samples per optimizer micro-step over all ranks.
        seed: run seed.
        epoch: epoch number (selects the permutation).
        start_batch: global batches of this epoch already consumed (skipped).
        rank, world_size: this process's share of every global batch.
        shuffle: False keeps dataset order (evaluation).
        drop_last: drop a last incomplete global batch.
    """

    def __init__(
        self,
        size: int,
        global_batch: int,
        seed: int,
        epoch: int,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} processes")
        self.size, self.global_batch = size, global_batch
        self.seed, self.epoch, self.start_batch = seed, epoch, start_batch
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.drop_last = shuffle, drop_last

    def num_batches(self) -> int:
        """Global batches in a full epoch."""
        full, rest = divmod(self.size, self.global_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.size, generator=gen)

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        local = self.global_batch // self.world_size
        for b in range(self.start_batch, self.num_batches()):
            batch = order[b * self.global_batch : (b + 1) * self.global_batch]
            # Contiguous slice per rank: rank r takes samples [r*local, (r+1)*local) of the batch.
            yield from batch[self.rank * local : (self.rank + 1) * local].tolist()

    def __len__(self) -> int:
        local = self.global_batch // self.world_size
        n = 0
        for b in range(self.start_batch, self.num_batches()):
            in_batch = min(self.global_batch, self.size - b * self.global_batch)
            n += max(0, min(local, in_batch - self.rank * local))
        return n
