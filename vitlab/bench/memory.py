"""Peak memory of one training step, measured outside the timed rounds.

CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was
allocated before the step (weights, AdamW state): the step's own peak (activations, gradients,
workspace).

CPU (Linux): the kernel's resident-set high-water mark. Before the step, freed heap pages go back
to the OS (glibc ``malloc_trim``) and the mark is reset to the current RSS (writing ``5`` to
``/proc/self/clear_refs``); after it, ``VmHWM - VmRSS before`` is the step's peak above what
was resident. The kernel records the true maximum (no sampling gap), but the figure is only as good
as the allocator's returning of freed memory: pages glibc keeps cached are not counted twice,
so it can under-state a step that reuses memory a previous step freed. Elsewhere: not measured.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import torch

from vitlab.utils.cpu_memory import trim_heap

CPU_METHOD = ("CPU: VmHWM - VmRSS of this process around one step (high-water mark reset via "
              "/proc/self/clear_refs after malloc_trim)")
CUDA_METHOD = "CUDA: torch.cuda.max_memory_allocated - memory_allocated around one step"
_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in {_STATUS}")


def cpu_peak_supported() -> bool:
    """Whether the high-water mark can be read and reset here (Linux >= 4.0)."""
    try:
        _status_kib("VmHWM")
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def step_peak_mib(step: Callable[[object], object], make_input: Callable[[], object], device: torch.device) -> float | None:
    """MiB the process's memory rose above its level before ``step(make_input())`` at its peak; None if unmeasurable."""
    batch = make_input()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step(batch)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if device.type != "cpu" or not cpu_peak_supported():
        return None
    trim_heap()  # freed heap pages go back to the OS, so the step's reuse of them shows in the RSS
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current VmRSS
    before = _status_kib("VmRSS")
    step(batch)
    return (_status_kib("VmHWM") - before) / 1024


def method(device: torch.device) -> str:
    """One line saying how :func:`step_peak_mib` measured on ``device``."""
    if device.type == "cuda":
        return CUDA_METHOD
    return CPU_METHOD if device.type == "cpu" and cpu_peak_supported() else f"not measured on {device.type}"
