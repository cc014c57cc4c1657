"""One string names a dataset: ``mnist``, ``torchvision:NAME`` or a folder; this opens its train / val split.

Grammar of ``source``:

* ``mnist``: the bundled digits; train = the 5k subset, val = the 10k test set.
  ``mnist-5k`` / ``mnist-test`` name one part whatever the split.
* ``torchvision:NAME``: :data:`vitlab.data.torchvision_sets.TORCHVISION_SETS`, under ``root``
  (default ``~/.cache/vitlab/datasets``).
* anything else is a folder: ``<path>/train`` for train and the first of ``<path>/val``,
  ``<path>/validation``, ``<path>/test`` for val; without such split folders the path itself is
  a class-subfolder tree, used for whichever split is asked.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
from torch.utils.data import Dataset

from vitlab.data.bad_samples import ImagePolicy
from vitlab.data.folder import ImageFolderDataset
from vitlab.data.mnist import MNIST_CLASSES, load_mnist_5k, load_mnist_test
from vitlab.data.tensor_dataset import TensorImageDataset
from vitlab.data.torchvision_sets import open_torchvision
from vitlab.errors import DataError

Split = Literal["train", "val"]
DEFAULT_ROOT = Path("~/.cache/vitlab/datasets")
TRAIN_DIRS = ("train",)
VAL_DIRS = ("val", "validation", "test")
_BUNDLED = {"mnist-5k": load_mnist_5k, "mnist-test": load_mnist_test}
_TORCHVISION_PREFIX = "torchvision:"


def open_source(
    source: str,
    split: Split,
    transform: Callable[[Any], Any] | None = None,
    root: str | Path | None = None,
    download: bool = True,
    *,
    classes: Sequence[str] | None = None,
    policy: ImagePolicy | None = None,
) -> Dataset:
    """The ``split`` of ``source`` as a dataset with ``.classes``; items are ``(transform(image), label)``.

    ``root`` is where torchvision datasets live. ``classes`` (e.g. the training classes when opening
    val) must then match the source's classes; folder labels follow that order. ``policy`` governs
    how a folder's files are read (pixel limit, bad files; default :class:`ImagePolicy`).
    """
    if split not in ("train", "val"):
        raise DataError(f"{source}: split must be 'train' or 'val', got {split!r}")
    name = source.strip()
    if name.lower() in ("mnist", *_BUNDLED):
        part = name.lower() if name.lower() in _BUNDLED else ("mnist-5k" if split == "train" else "mnist-test")
        images, labels = _bundled(part)
        dataset: Any = TensorImageDataset(images, labels, MNIST_CLASSES, transform)
    elif name.lower().startswith(_TORCHVISION_PREFIX):
        dataset = open_torchvision(name[len(_TORCHVISION_PREFIX):], root if root is not None else DEFAULT_ROOT,
                                   train=split == "train", transform=transform, download=download)
    else:
        folder = split_folder(name, split)
        return ImageFolderDataset(folder, transform, classes=list(classes) if classes is not None else None,
                                  policy=policy)
    if classes is not None and list(classes) != dataset.classes:
        raise DataError(f"{source}: classes {dataset.classes} differ from the expected {list(classes)}")
    return dataset


def split_folder(path: str | Path, split: Split) -> Path:
    """The class-subfolder tree for ``split`` inside ``path`` (see the module docstring)."""
    base = Path(path).expanduser()
    if not base.is_dir():
        what = "data folder not found" if not base.exists() else "not a directory"
        raise DataError(f"{base}: {what} (expected a folder of class subfolders, 'mnist' or 'torchvision:NAME')")
    present = [d for d in (*TRAIN_DIRS, *VAL_DIRS) if (base / d).is_dir()]
    if not present:
        return base
    wanted = TRAIN_DIRS if split == "train" else VAL_DIRS
    for name in wanted:
        if name in present:
            return base / name
    # A train/ without val/ (or the reverse): treating base as classes would make 'train' a class.
    raise DataError(f"{base}: has {', '.join(p + '/' for p in present)} but no {' or '.join(d + '/' for d in wanted)} "
                    f"for the {split} split")


def describe_source(source: str) -> str:
    """One line for logs, e.g. ``bundled MNIST (train: 5,000 digits; val: 10,000 test digits)``."""
    name = source.strip()
    low = name.lower()
    if low == "mnist":
        return "bundled MNIST (train: 5,000-digit subset; val: the 10,000-digit test set)"
    if low == "mnist-5k":
        return "bundled MNIST 5,000-digit training subset"
    if low == "mnist-test":
        return "bundled MNIST 10,000-digit test set"
    if low.startswith(_TORCHVISION_PREFIX):
        return f"torchvision dataset {name[len(_TORCHVISION_PREFIX):].lower()}"
    return f"image folder {Path(name).expanduser()}"


@functools.lru_cache(maxsize=None)
def _bundled(part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read once per process: train and val datasets (and repeated runs in a notebook) share the tensors."""
    return _BUNDLED[part]()
