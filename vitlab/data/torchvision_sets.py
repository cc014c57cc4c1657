"""torchvision's classification datasets by lower-case name, with one train / eval switch for all."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torchvision.datasets as tvd
from torch.utils.data import Dataset

from vitlab.errors import DataError

TORCHVISION_SETS: dict[str, type[Dataset]] = {
    "cifar10": tvd.CIFAR10,
    "cifar100": tvd.CIFAR100,
    "mnist": tvd.MNIST,
    "fashionmnist": tvd.FashionMNIST,
    "kmnist": tvd.KMNIST,
    "svhn": tvd.SVHN,
    "stl10": tvd.STL10,
    "food101": tvd.Food101,
    "flowers102": tvd.Flowers102,
    "oxfordiiitpet": tvd.OxfordIIITPet,
    "dtd": tvd.DTD,
}
# Datasets that take ``split=`` instead of ``train=``: (train split, eval split).
_SPLITS: dict[str, tuple[str, str]] = {
    "svhn": ("train", "test"),
    "stl10": ("train", "test"),
    "food101": ("train", "test"),
    "flowers102": ("train", "test"),
    "oxfordiiitpet": ("trainval", "test"),
    "dtd": ("train", "test"),
}
# Class count for datasets without a ``classes`` attribute (SVHN's labels are the digits 0-9).
_NUM_CLASSES = {"svhn": 10}


class TorchvisionDataset(Dataset):
    """A torchvision dataset with vitlab's face: ``classes`` (list[str]) and ``(image, int label)`` items."""

    def __init__(self, name: str, dataset: Dataset, classes: list[str]) -> None:
        self.name = name
        self.dataset = dataset
        self.classes = classes

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index]
        return image, int(label)


def open_torchvision(
    name: str, root: str | Path, train: bool, transform: Callable[[Any], Any] | None = None, download: bool = True
) -> TorchvisionDataset:
    """Open ``torchvision.datasets.<name>`` under ``root``, downloading it there if missing and allowed.

    Items are ``(transform(PIL image), label)``. Unknown names and failed or disabled downloads raise
    DataError; a download attempt without network fails in well under a second.
    """
    key = name.lower()
    if key not in TORCHVISION_SETS:
        raise DataError(f"torchvision:{name}: unknown dataset; known: {', '.join(sorted(TORCHVISION_SETS))}")
    root = Path(root).expanduser()
    split_kw: dict[str, Any] = {"split": _SPLITS[key][0 if train else 1]} if key in _SPLITS else {"train": train}
    try:
        dataset = TORCHVISION_SETS[key](str(root), transform=transform, download=download, **split_kw)
    except Exception as e:  # noqa: BLE001 - urllib, tarfile, checksum and "not found" errors all mean the same here
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(":")
        if not download:
            raise DataError(f"torchvision:{key}: not found under {root} and download is off ({reason})") from None
        raise DataError(f"torchvision:{key}: not found under {root} and could not be downloaded ({reason}); "
                        "download it on a machine with network access or pass an image folder") from None
    return TorchvisionDataset(key, dataset, _class_names(key, dataset))


def _class_names(key: str, dataset: Any) -> list[str]:
    classes = getattr(dataset, "classes", None)
    if classes:
        return [str(c) for c in classes]
    return [str(i) for i in range(_NUM_CLASSES[key])]
