"""Shared fixtures: tiny image folders made from real (bundled) MNIST digits."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# The suite runs as two pytest-xdist workers on two cores and its models are tiny: one intra-op
# thread per worker avoids oversubscription, which made small backward passes ~20x slower.
torch.set_num_threads(1)
# Measured choices (--precision auto, --runtime auto, MAC counts) are cached in $VITLAB_CACHE: the suite
# keeps its own, so it neither reads a developer's verdicts nor leaves its tiny models' behind.
os.environ.setdefault("VITLAB_CACHE", tempfile.mkdtemp(prefix="vitlab-test-cache-"))


def _write_digits(root: Path, per_class: int, classes: list[int], offset: int) -> None:
    from vitlab.data.mnist import load_mnist_5k

    images, labels = load_mnist_5k()
    for c in classes:
        folder = root / f"digit{c}"
        folder.mkdir(parents=True, exist_ok=True)
        idx = torch.nonzero(labels == c).flatten()[offset : offset + per_class]
        for i in idx.tolist():
            Image.fromarray(images[i, 0].numpy()).save(folder / f"{i}.png")


@pytest.fixture(scope="session")
def digit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/train/digit{0,1,2}/*.png (12 each) and ROOT/val/... (6 each): real MNIST digits."""
    root = tmp_path_factory.mktemp("digits")
    _write_digits(root / "train", 12, [0, 1, 2], 0)
    _write_digits(root / "val", 6, [0, 1, 2], 100)
    return root


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
