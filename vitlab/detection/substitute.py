"""Training detection samples whose image fails to decode mid-run: substituted, counted, bounded.

The same policy as the classification folders (:mod:`vitlab.data.bad_samples`): the next readable
index stands in (``index + 1``, ... wrapping), its target is marked ``substituted``, the task counts
it into ``bad_samples`` of the epoch record, and after ``max_bad_samples`` distinct bad files (or at
the first with ``strict``) the run stops with a DataError listing them. Only for training: an
evaluation set keeps every image (a stand-in would corrupt the image-id-based mAP).
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from vitlab.data.bad_samples import BadFiles, ImagePolicy
from vitlab.errors import DataError


class SubstitutingSamples(Dataset):
    """Wrap a detection dataset yielding ``(image, target)``; a sample whose file cannot be decoded is
    replaced by the next readable one, with ``target["substituted"] = True``.

    Args:
        dataset: the training :class:`~vitlab.detection.base.DetectionDataset` (transform applied inside).
        policy: strictness and the limit of distinct bad files.
    """

    def __init__(self, dataset: Any, policy: ImagePolicy) -> None:
        self.dataset, self.bad = dataset, BadFiles(policy)
        self.classes = getattr(dataset, "classes", None)
        self.skipped = getattr(dataset, "skipped", {})

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # coco_ground_truth, images, ...: the wrapped dataset's
        if name in ("dataset", "bad"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        n = len(self.dataset)
        for step in range(n):
            try:
                image, target = self.dataset[(index + step) % n]
            except DataError as err:
                self.bad.add(str(err).split(":", 1)[0], err)
                continue
            if step:
                target = {**target, "substituted": True}
            return image, target
        raise DataError(f"none of the {n} training images could be decoded")
