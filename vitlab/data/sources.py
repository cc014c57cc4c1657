"""One string names a dataset (``mnist``, ``torchvision:NAME``, ``wds:PATTERN``, ``hf:PATH``, a folder); this
opens its train / val / test split.

Grammar of ``source``:

* ``mnist``: the bundled digits; train = the 5k subset less a validation carve-out, val = that
  carve-out, test = the 10k test set. ``mnist-5k`` / ``mnist-test`` name one part whatever the split.
* ``torchvision:NAME``: :data:`vitlab.data.torchvision_sets.TORCHVISION_SETS`, under ``root``
  (default ``~/.cache/vitlab/datasets``); val is carved from its train set, test is its test set.
* ``wds:PATTERN``: WebDataset tar shards (:mod:`vitlab.data.wds_source`): the pattern's shards are
  train; files beside them named ``val`` / ``test`` instead of ``train`` are val and test.
* ``hf:PATH``: a Hugging Face ``save_to_disk`` folder or parquet files (:mod:`vitlab.data.hf_source`);
  its own train / validation / test splits.
* anything else is a folder: ``<path>/train``, ``<path>/val`` (or ``validation``) and
  ``<path>/test``; without ``val/`` the validation split is carved from ``train/``; without any
  split folders the path itself is the (training) class-subfolder tree, val carved from it, and
  there is no test split. Never is a folder validated on its own training images.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
from torch.utils.data import Dataset

from vitlab.data.bad_samples import ImagePolicy
from vitlab.data.folder import ImageFolderDataset
import vitlab.data.hf_source as hf_source
import vitlab.data.wds_source as wds_source
from vitlab.data.mnist import MNIST_CLASSES, load_mnist_5k, load_mnist_test
from vitlab.data.splits import carve
from vitlab.data.tensor_dataset import TensorImageDataset
from vitlab.data.torchvision_sets import open_torchvision
from vitlab.errors import DataError

Split = Literal["train", "val", "test"]
DEFAULT_ROOT = Path("~/.cache/vitlab/datasets")
TRAIN_DIRS = ("train",)
VAL_DIRS = ("val", "validation")
TEST_DIRS = ("test",)
_BUNDLED = {"mnist-5k": load_mnist_5k, "mnist-test": load_mnist_test}
_TORCHVISION_PREFIX = "torchvision:"


def native_splits(source: str) -> tuple[str, ...]:
    """The splits ``source`` has of its own ("train", "val", "test"); a missing val is carved from train."""
    low = source.strip().lower()
    if low in _BUNDLED:
        return ("train", "val", "test")  # one named part, whatever the split
    if low == "mnist" or low.startswith(_TORCHVISION_PREFIX):
        return ("train", "test")
    if low.startswith((wds_source.PREFIX, hf_source.PREFIX)):  # the archive's own splits, by name
        wds = low.startswith(wds_source.PREFIX)
        rest = source.strip()[len(wds_source.PREFIX if wds else hf_source.PREFIX):]
        found = wds_source.split_patterns(rest) if wds else hf_source.hf_splits(rest)
        return tuple(s for s in ("train", "val", "test") if s in found)
    base = Path(source).expanduser()
    present = [d for d in (*TRAIN_DIRS, *VAL_DIRS, *TEST_DIRS) if (base / d).is_dir()] if base.is_dir() else []
    out = ["train"] + (["val"] if any(d in present for d in VAL_DIRS) else [])
    return tuple(out + (["test"] if any(d in present for d in TEST_DIRS) else []))


def photo_source(source: str) -> bool:
    """Whether ``source`` holds photos of any size (an image folder, shards) rather than the bundled
    digits or a torchvision set, whose recipes choose their own augmentation; the trainer gives a
    photo source random-resized crops and flips by default (``data.augment`` fields left ``auto``)."""
    low = source.strip().lower()
    return not (low == "mnist" or low in _BUNDLED or low.startswith(_TORCHVISION_PREFIX))


def open_source(
    source: str,
    split: Split,
    transform: Callable[[Any], Any] | None = None,
    root: str | Path | None = None,
    download: bool = True,
    *,
    classes: Sequence[str] | None = None,
    policy: ImagePolicy | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    carve_val: bool = True,
) -> Dataset:
    """The ``split`` of ``source`` as a dataset with ``.classes``; items are ``(transform(image), label)``.

    Train, val and test are different data. A source without a validation split of its own
    (``mnist``, torchvision sets, a folder without ``val/``, a flat folder) gets a seeded,
    stratified carve-out of ``val_fraction`` of its training split (``split_seed``; see
    :mod:`vitlab.data.splits`), and ``train`` is then the rest. ``test`` is the source's own test
    split (the 10k MNIST digits, a torchvision test set, a folder's ``test/``); DataError when
    there is none. ``root`` is where torchvision datasets live. ``classes`` must match the
    source's classes; folder labels follow that order. ``policy`` governs how a folder's files
    are read (pixel limit, bad files; default :class:`ImagePolicy`). ``carve_val=False``: the
    validation images come from elsewhere, so ``train`` is the whole training split.
    """
    if split not in ("train", "val", "test"):
        raise DataError(f"{source}: split must be 'train', 'val' or 'test', got {split!r}")
    native = native_splits(source)
    if split not in native and split == "test":
        raise DataError(f"{source}: has no test split (a test/ folder, or a source with one such as mnist)")
    if split in native:
        dataset = _open_native(source, split, transform, root, download, classes, policy)
    else:  # val carved from train
        base = _open_native(source, "train", transform, root, download, classes, policy)
        dataset = carve(base, "val", val_fraction, split_seed)
    if split == "train" and "val" not in native and carve_val:
        dataset = carve(dataset, "train", val_fraction, split_seed)
    if classes is not None and list(classes) != list(dataset.classes):
        raise DataError(f"{source}: classes {dataset.classes} differ from the expected {list(classes)}")
    return dataset


def _open_native(source: str, split: str, transform: Callable[[Any], Any] | None, root: str | Path | None,
                 download: bool, classes: Sequence[str] | None, policy: ImagePolicy | None) -> Any:
    name = source.strip()
    if name.lower() in ("mnist", *_BUNDLED):
        part = name.lower() if name.lower() in _BUNDLED else ("mnist-5k" if split == "train" else "mnist-test")
        images, labels = _bundled(part)
        return TensorImageDataset(images, labels, MNIST_CLASSES, transform)
    if name.lower().startswith(_TORCHVISION_PREFIX):
        return open_torchvision(name[len(_TORCHVISION_PREFIX):], root if root is not None else DEFAULT_ROOT,
                                train=split == "train", transform=transform, download=download)
    if name.lower().startswith(wds_source.PREFIX):
        return wds_source.open_wds(name[len(wds_source.PREFIX):], split, transform, classes, policy)
    if name.lower().startswith(hf_source.PREFIX):
        return hf_source.open_hf(name[len(hf_source.PREFIX):], split, transform, classes, policy)
    folder = split_folder(name, split)  # type: ignore[arg-type]
    return ImageFolderDataset(folder, transform, classes=list(classes) if classes is not None else None, policy=policy)


def split_folder(path: str | Path, split: Split) -> Path:
    """The class-subfolder tree for ``split`` inside ``path`` (see the module docstring)."""
    base = Path(path).expanduser()
    if not base.is_dir():
        what = "data folder not found" if not base.exists() else "not a directory"
        raise DataError(f"{base}: {what} (expected a folder of class subfolders, 'mnist' or 'torchvision:NAME')")
    present = [d for d in (*TRAIN_DIRS, *VAL_DIRS, *TEST_DIRS) if (base / d).is_dir()]
    if not present:
        return base  # a flat class-subfolder tree: the training split (val is carved from it)
    wanted = {"train": TRAIN_DIRS, "val": VAL_DIRS, "test": TEST_DIRS}[split]
    for name in wanted:
        if name in present:
            return base / name
    # A val/ without train/ (or the like): treating base as classes would make 'val' a class.
    raise DataError(f"{base}: has {', '.join(p + '/' for p in present)} but no {' or '.join(d + '/' for d in wanted)} "
                    f"for the {split} split")


def describe_source(source: str) -> str:
    """One line for logs, e.g. ``bundled MNIST (train: 5,000 digits; val: 10,000 test digits)``."""
    name = source.strip()
    low = name.lower()
    if low == "mnist":
        return "bundled MNIST (train: the 5,000-digit subset less a validation carve-out; test: the 10,000-digit test set)"
    if low == "mnist-5k":
        return "bundled MNIST 5,000-digit training subset"
    if low == "mnist-test":
        return "bundled MNIST 10,000-digit test set"
    if low.startswith(_TORCHVISION_PREFIX):
        return f"torchvision dataset {name[len(_TORCHVISION_PREFIX):].lower()}"
    if low.startswith(wds_source.PREFIX):
        return wds_source.describe_wds(name[len(wds_source.PREFIX):])
    if low.startswith(hf_source.PREFIX):
        return hf_source.describe_hf(name[len(hf_source.PREFIX):])
    return f"image folder {Path(name).expanduser()}"


@functools.lru_cache(maxsize=None)
def _bundled(part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read once per process: train and val datasets (and repeated runs in a notebook) share the tensors."""
    return _BUNDLED[part]()
