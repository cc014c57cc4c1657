"""One timed call on a fresh random input, synchronised with the device before and after."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

from vitlab.bench.stats import Variant

T = TypeVar("T")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU needs nothing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_images(shape: tuple[int, ...], device: torch.device) -> Callable[[], torch.Tensor]:
    """A maker of new random images each call: uniform in [-1, 1], the range after (x - 0.5) / 0.5.

    Fresh data every call so no library can reuse a result computed on the previous input;
    not zeros, so no kernel can take a shortcut on them.
    """
    return lambda: torch.rand(shape, device=device) * 2 - 1


def timed(fn: Callable[[T], object], make_input: Callable[[], T], device: torch.device) -> Variant:
    """A variant for :func:`vitlab.bench.stats.interleave`: ``fn(make_input())``, timing ``fn`` only."""

    def run() -> float:
        x = make_input()  # made outside the timed part
        sync(device)
        start = time.perf_counter()
        fn(x)
        sync(device)
        return time.perf_counter() - start

    return run
