"""What a dataset does with a file that passed the header check but fails to decode mid-run.

Policy (:class:`ImagePolicy`): a bad sample is replaced by the next readable index (``index + 1``,
``index + 2``, ... wrapping), so the batch keeps its size and its seeded augmentation (still seeded
by the original index): a resumed run sees exactly the same substitute. The replacement's label is
a :class:`SubstitutedLabel` (an ``int``), which :func:`collate_counting` counts into the batch, so
the count reaches the task's step sums and the epoch record (``bad_samples``). After
``max_bad_samples`` distinct bad files in one process the dataset stops with a DataError listing
them; ``strict`` stops at the first. Each bad file is one line on the ``vitlab.data`` logger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.utils.data import default_collate

from vitlab.data.image_io import max_image_pixels
from vitlab.errors import DataError

DEFAULT_MAX_BAD_SAMPLES = 100
LOG = logging.getLogger("vitlab.data")


@dataclass(frozen=True)
class ImagePolicy:
    """How untrusted image files are read.

    Attributes:
        max_pixels: refuse headers announcing more pixels (None: :func:`~vitlab.data.image_io.max_image_pixels`).
        strict: stop at the first file that cannot be decoded.
        max_bad_samples: otherwise substitute up to this many distinct bad files, then stop.
    """

    max_pixels: int | None = None
    strict: bool = False
    max_bad_samples: int = DEFAULT_MAX_BAD_SAMPLES

    def __post_init__(self) -> None:
        if self.max_bad_samples < 0:
            raise DataError(f"max_bad_samples must be >= 0, got {self.max_bad_samples}")
        max_image_pixels(self.max_pixels)  # validates an explicit value

    @classmethod
    def from_settings(cls, data: Any) -> ImagePolicy:
        """From an object with ``max_image_pixels``, ``strict`` and ``max_bad_samples`` (``TrainConfig.data``)."""
        return cls(getattr(data, "max_image_pixels", None), bool(getattr(data, "strict", False)),
                   int(getattr(data, "max_bad_samples", DEFAULT_MAX_BAD_SAMPLES)))

    @property
    def limit(self) -> int:
        """Distinct bad files tolerated before the run stops."""
        return 0 if self.strict else self.max_bad_samples


class SubstitutedLabel(int):
    """The label of a sample that stands in for an unreadable one (behaves as the plain int)."""

    def __reduce__(self) -> tuple[Any, ...]:  # pickles across loader workers as itself
        return (SubstitutedLabel, (int(self),))


class BadFiles:
    """The distinct bad files one dataset copy has met; raises when the policy's limit is passed."""

    def __init__(self, policy: ImagePolicy) -> None:
        self.policy = policy
        self.errors: dict[str, str] = {}

    def add(self, path: str, error: DataError) -> None:
        if path not in self.errors:  # never silent: one line per bad file, wherever the dataset is used
            self.errors[path] = str(error)
            if not self.policy.strict:
                LOG.warning("%s; the next readable sample stands in for it", error)
        if self.policy.strict:
            raise DataError(f"{error} (data.strict / --strict-data: stopping at the first bad file)")
        if len(self.errors) > self.policy.limit:
            shown = "; ".join(list(self.errors.values())[:3])
            raise DataError(f"{len(self.errors)} images could not be decoded, more than data.max_bad_samples="
                            f"{self.policy.limit} ({shown}); fix or remove them, or raise the limit")


def load_or_substitute(index: int, count: int, load: Callable[[int], tuple[Any, int]], name: Callable[[int], str],
                       bad: BadFiles, none_readable: str) -> tuple[Any, int]:
    """``load(index)`` -> (image, label), or that of the next readable index: a deterministic stand-in.

    The one substitution rule of every dataset (folders, tar shards, HF datasets): an index whose
    ``load`` raises DataError is recorded in ``bad`` under ``name(i)`` (which raises once the policy's
    limit is passed) and the next index is tried; a stand-in's label is a :class:`SubstitutedLabel`
    so the batch counts it. DataError ``none_readable`` when no index of ``count`` loads.
    """
    for step in range(count):
        i = (index + step) % count
        try:
            image, label = load(i)
        except DataError as err:
            bad.add(name(i), err)
            continue
        return image, (SubstitutedLabel(label) if step else label)
    raise DataError(none_readable)


def collate_counting(items: list[tuple[Any, Any]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``default_collate`` of (image, label) items plus how many stand in for unreadable ones (a 0-dim int64)."""
    bad = sum(isinstance(label, SubstitutedLabel) for _, label in items)
    images, labels = default_collate(items)
    return images, labels, torch.tensor(bad, dtype=torch.int64)
