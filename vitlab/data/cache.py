"""Decode an image folder into memory once: small-image datasets (CIFAR, MNIST as JPEG) then cost no
file reads or JPEG decoding per epoch, leaving the CPU to the model.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import torch
try:
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # a torchvision without image decoders
    decode_image = None
from torchvision.transforms.v2 import functional as F

from vitlab.data.folder import ImageFolderDataset
from vitlab.data.image_io import open_image, read_header
from vitlab.data.tensor_dataset import TensorImageDataset
from vitlab.errors import DataError
from vitlab.utils.progress import track

# 32x32 RGB: 3 KiB an image, so 1 GiB holds ~350k CIFAR images; above this the cache is refused.
MAX_CACHE_BYTES = 8 * 2**30
# The fast path is taken only where torchvision gives exactly the guarded opener's pixels: baseline
# 8-bit grey / RGB JPEGs that need no EXIF turn. Everything else (16-bit PNG, palette, alpha, CMYK,
# animations, orientation) goes through vitlab.data.image_io, so both paths agree on every mode.
_FAST_FORMATS = frozenset({"JPEG"})
_FAST_MODES = frozenset({"L", "RGB"})


def cache_folder(
    dataset: ImageFolderDataset, transform: Callable[[torch.Tensor], Any] | None = None, quiet: bool = False
) -> TensorImageDataset:
    """All of ``dataset``'s images as one uint8 tensor (N, 3, H, W) with its labels and classes.

    Every image must have the size of the first (the cache is for fixed-size datasets; resize them
    once beforehand otherwise); a different one raises DataError naming the file, as does a file
    that cannot be read. JPEG / PNG / WebP / GIF decode through ``torchvision.io`` (the same pixels
    as PIL for baseline JPEG, without PIL's per-call overhead: ~50 us for a 32x32 JPEG instead of
    ~300); other formats, and anything it rejects, go through PIL. Every file passes the guarded
    header check first (allowed format, ``dataset.policy``'s pixel limit). A progress bar with rate
    and ETA shows on stderr when it is a terminal (not with ``quiet``).
    """
    if not len(dataset):
        raise DataError(f"{dataset.root}: nothing to cache")
    limit = dataset.policy.max_pixels
    first = _decode(dataset.samples[0][0], limit)
    c, h, w = first.shape
    need = len(dataset) * c * h * w
    if need > MAX_CACHE_BYTES:
        raise DataError(f"{dataset.root}: {len(dataset)} images of {w}x{h} need {need / 2**30:.1f} GiB, "
                        f"more than the cache's {MAX_CACHE_BYTES / 2**30:.0f} GiB limit; set data.cache false")
    images = torch.empty((len(dataset), c, h, w), dtype=torch.uint8)
    samples = track(dataset.samples, f"caching {dataset.root.name}", unit="img", quiet=quiet)
    for index, (path, _) in enumerate(samples):
        image = first if index == 0 else _decode(path, limit)
        if image.shape != first.shape:
            raise DataError(f"{path}: {image.shape[2]}x{image.shape[1]} differs from {w}x{h} "
                            f"({dataset.samples[0][0]}); data.cache needs images of one size")
        images[index] = image
    labels = torch.tensor(dataset.targets, dtype=torch.int64)
    return TensorImageDataset(images, labels, dataset.classes, transform)


class FolderCache:
    """:func:`cache_folder` once per folder: views of one folder (the training images and the
    validation carve-out of the same ``train/``) share one decoded tensor, each with its own
    transform, instead of decoding the folder twice (CIFAR-10's 20k JPEGs: ~12 s and 60 MB each)."""

    def __init__(self) -> None:
        self._done: dict[tuple[Path, tuple[str, ...], int | None], TensorImageDataset] = {}

    def __call__(self, dataset: ImageFolderDataset, transform: Callable[[torch.Tensor], Any] | None = None,
                 quiet: bool = False) -> TensorImageDataset:
        key = (dataset.root.resolve(), tuple(dataset.classes), dataset.policy.max_pixels)
        if key not in self._done:
            self._done[key] = cache_folder(dataset, None, quiet)
        done = self._done[key]
        return TensorImageDataset(done.images, done.labels, done.classes, transform)


def _decode(path: Path, max_pixels: int | None) -> torch.Tensor:
    """(3, H, W) uint8 RGB, the pixels of :func:`vitlab.data.image_io.open_image`."""
    header = read_header(path, max_pixels)  # allow-list and pixel limit before any decoding
    fast = header.format in _FAST_FORMATS and header.mode in _FAST_MODES and header.orientation == 1
    if decode_image is not None and fast:
        try:
            data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its decoders in favour of TorchCodec (not a dependency
                # here); should they go, the ImportError fallback above sends every file through PIL.
                warnings.simplefilter("ignore", DeprecationWarning)
                return decode_image(data, mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError, OSError):
            pass  # PIL decides, and names the file in its error
    return F.pil_to_tensor(open_image(path, max_pixels))
