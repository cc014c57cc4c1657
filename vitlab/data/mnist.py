"""The MNIST digits bundled with vitlab: a 5,000-image training subset and the 10,000-image test set.

Both load in well under a second with no download, so ``vitlab train`` works out of the box and tests
can train on real data. Provenance and checksums: ``assets/ATTRIBUTION.md``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from vitlab.errors import DataError

ASSETS = Path(__file__).parent / "assets"
MNIST_CLASSES = [str(i) for i in range(10)]

_ROWS = _COLS = 28
_IMAGES_MAGIC = 2051  # IDX: 0x00000803 = unsigned byte, 3 dimensions
_LABELS_MAGIC = 2049  # IDX: 0x00000801 = unsigned byte, 1 dimension


def load_mnist_5k() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000-digit subset (500 per class, rows sorted by class).

    Returns images uint8 (5000, 1, 28, 28) and labels int64 (5000,).
    """
    path = ASSETS / "mnist_5k.csv.gz"
    # One row per digit: 784 pixels then the label; numpy parses it ~20x faster than the csv module.
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read bundled MNIST ({e})") from None
    if table.ndim != 2 or table.shape[1] != _ROWS * _COLS + 1:
        raise DataError(f"{path}: expected {_ROWS * _COLS + 1} columns per row, got shape {table.shape}")
    images = torch.from_numpy(np.ascontiguousarray(table[:, :-1])).view(-1, 1, _ROWS, _COLS)
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    return images, labels


def load_mnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    """The standard 10,000-digit MNIST test set from its IDX files.

    Returns images uint8 (10000, 1, 28, 28) and labels int64 (10000,).
    """
    images = _read_idx(ASSETS / "t10k-images-idx3-ubyte.gz", _IMAGES_MAGIC, (_ROWS, _COLS))
    labels = _read_idx(ASSETS / "t10k-labels-idx1-ubyte.gz", _LABELS_MAGIC, ())
    if len(images) != len(labels):
        raise DataError(f"{ASSETS}: {len(images)} MNIST test images but {len(labels)} labels")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """An IDX file of unsigned bytes as an array (count, *item_shape); the header is big-endian int32s."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    header_len = 4 * (2 + len(item_shape))
    if len(raw) < header_len:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    header = np.frombuffer(raw, dtype=">i4", count=2 + len(item_shape))
    if header[0] != magic:
        raise DataError(f"{path}: IDX magic number {header[0]}, expected {magic}")
    count, dims = int(header[1]), tuple(int(d) for d in header[2:])
    if dims != item_shape:
        raise DataError(f"{path}: IDX item shape {dims}, expected {item_shape}")
    expected = header_len + count * int(np.prod(item_shape, dtype=np.int64))
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes for {count} items, expected {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(count, *item_shape).copy()
