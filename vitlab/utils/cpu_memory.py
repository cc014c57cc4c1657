"""Keep freed CPU memory in the process while training, so that each step does not page-fault afresh.

glibc's ``malloc`` serves a large block with a fresh ``mmap`` and unmaps it on ``free`` (blocks of
32 MiB or more always, smaller ones until its threshold adapts), and returns the free top of its
heap to the OS past a threshold. A training step frees nearly everything it allocated (the
activations and their gradients), so the next step gets new pages and the kernel takes a fault and
zeroes a page for every 4 KiB it touches: ~200,000-320,000 faults a step for ViT-S/16 at batch 32
on the CPU, ~14% of the step's time (docs/training.md, "CPU memory"). Torch's CPU allocator has
no cache of its own, so the cure is the allocator's policy: ``mallopt(M_MMAP_MAX, 0)`` serves every
block from the heap and ``mallopt(M_TRIM_THRESHOLD, -1)`` never gives the heap back, the two
settings the mallopt(3) manual documents for this. The heap then stays at the run's high-water
mark (a few percent above it, from fragmentation), which a training run reaches anyway.

The policy is process-wide, so :func:`kept_cpu_memory` sets it only for the length of the training
run and restores glibc's defaults (and trims the heap) after it. ``VITLAB_CPU_ALLOCATOR=default``
leaves glibc's policy alone. Other C libraries (musl, macOS, Windows): nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

ENV = "VITLAB_CPU_ALLOCATOR"  # "default": leave glibc's policy; anything else (or unset): keep freed memory
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt(3) parameter numbers, from glibc's <malloc.h>
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's documented defaults
_depth = 0  # nesting of kept_cpu_memory (a detection run inside a study, say): restore at the outermost exit


def glibc() -> ctypes.CDLL | None:
    """glibc's ``libc.so.6`` when this process runs on it (``mallopt`` and ``malloc_trim`` present), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None
    return libc


def trim_heap() -> None:
    """Give freed heap pages back to the OS now (glibc ``malloc_trim(0)``); nothing elsewhere."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _set_policy(libc: ctypes.CDLL, mmap_max: int, trim_threshold: int) -> bool:
    return bool(libc.mallopt(M_MMAP_MAX, mmap_max)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))


@contextmanager
def kept_cpu_memory(device: torch.device, echo: Callable[[str], None] | None = None) -> Iterator[bool]:
    """Within the block, freed CPU memory stays in the process for the next step; yields whether the policy is set.

    Only for ``device.type == "cpu"`` (a GPU run's activations are not in this heap), with glibc, and
    unless ``VITLAB_CPU_ALLOCATOR=default``. ``echo`` gets one line saying what was done, or why not.
    """
    global _depth
    libc = glibc() if device.type == "cpu" else None
    opted_out = os.environ.get(ENV, "").strip().lower() == "default"
    if libc is None or opted_out:
        if echo is not None and device.type == "cpu":
            why = f"{ENV}=default" if opted_out else "not glibc"
            echo(f"cpu memory: the C library's own policy ({why})")
        yield False
        return
    if _depth == 0 and not _set_policy(libc, 0, -1):
        _set_policy(libc, DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD)
        if echo is not None:
            echo("cpu memory: the C library's own policy (mallopt refused the settings)")
        yield False
        return
    _depth += 1
    if echo is not None and _depth == 1:
        echo(f"cpu memory: freed blocks kept for the next step, no page faults on fresh activations "
             f"(glibc mallopt; {ENV}=default turns it off)")
    try:
        yield True
    finally:
        _depth -= 1
        if _depth == 0:
            _set_policy(libc, DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)
