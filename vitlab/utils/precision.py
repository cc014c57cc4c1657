"""``--precision auto`` by measurement: time bf16 against fp32 on this device, cache the verdict.

Whether bf16 autocast is faster than fp32 depends on the processor, not its vendor: CPUs with
AMX or avx512_bf16 and recent GPUs run a bf16 matrix multiply about twice as fast, CPUs without
them emulate it and run 0.6-0.7x. So the choice is measured: a short timing (~0.3 s) of the
operation a ViT spends its time in, the MLP's first linear layer (256, width) x (width, 4 width)
under bf16 autocast and in fp32, interleaved over rounds, median of the per-round ratios.

The verdict is cached per machine in ``$VITLAB_CACHE/precision.json`` (default
``~/.cache/vitlab``), keyed by everything that changes the answer: CPU model and its bf16-related
flags, GPU name, torch version, thread count and the width measured.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vitlab.errors import VitlabError
from vitlab.utils.atomic import atomic_write

# bf16 must beat fp32 by this factor to be chosen: below it the gain is within the noise of a
# ~0.3 s timing on a shared machine, and fp32 is the reference numerics.
MIN_SPEEDUP = 1.15
# The CPU flags that decide bf16 speed; recorded in the cache key and in the bench's machine record.
BF16_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16", "avx2")
_TOKENS = 256  # rows of the timed product: about one 224x224 image's tokens (197)

Timer = Callable[[torch.device, int], tuple[float, float]]


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``auto`` resolved to, the measured bf16 / fp32 speed ratio, and the one line that says why."""

    precision: str
    speedup: float
    cached: bool
    reason: str


def cache_file() -> Path:
    """``$VITLAB_CACHE/precision.json``, default ``~/.cache/vitlab/precision.json``."""
    return Path(os.environ.get("VITLAB_CACHE") or "~/.cache/vitlab").expanduser() / "precision.json"


def cpu_facts() -> dict[str, object]:
    """CPU model name and which of :data:`BF16_FLAGS` it has (from /proc/cpuinfo on Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:  # not Linux: the model name from platform, no flags
        pass
    return {"cpu": model, "flags": [f for f in BF16_FLAGS if f in flags]}


def machine_key(device: torch.device, width: int) -> str:
    """Cache key: CPU model + bf16 flags, GPU name, torch version, threads, device type and width."""
    facts = cpu_facts()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return "|".join([str(facts["cpu"]), ",".join(facts["flags"]), gpu, torch.__version__,
                     f"threads={torch.get_num_threads()}", device.type, f"width={width}"])


def measure_bf16_speedup(device: torch.device, width: int, rounds: int = 5, budget_s: float = 0.3) -> tuple[float, float]:
    """(bf16 speed / fp32 speed, seconds spent) for ``x @ W.T`` with x (256, width), W (4 width, width).

    Each round times one fp32 and one bf16-autocast call back to back (after warm-up), so load
    from other processes hits both alike; the result is the median of the per-round ratios.
    Rounds are added until ``budget_s`` is spent or ``rounds`` are done, whichever is later.
    """
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(_TOKENS, width, generator=g).to(device)
    w = torch.randn(4 * width, width, generator=g).to(device)
    start = time.perf_counter()
    for _ in range(3):  # kernel selection and packing caches (oneDNN, cuBLAS) warm up here
        _timed(x, w, device, False), _timed(x, w, device, True)
    ratios: list[float] = []
    while len(ratios) < rounds or (time.perf_counter() - start < budget_s and len(ratios) < 50):
        fp32, bf16 = _timed(x, w, device, False), _timed(x, w, device, True)
        ratios.append(fp32 / bf16)
    return statistics.median(ratios), time.perf_counter() - start


def _timed(x: torch.Tensor, w: torch.Tensor, device: torch.device, bf16: bool) -> float:
    _sync(device)
    t = time.perf_counter()
    if bf16:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            F.linear(x, w)
    else:
        F.linear(x, w)
    _sync(device)
    return time.perf_counter() - t


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def choose_precision(device: torch.device, width: int = 768, timer: Timer | None = None) -> PrecisionChoice:
    """bf16 where it measures at least :data:`MIN_SPEEDUP` times fp32's speed on ``device``, else fp32.

    Args:
        device: where the model will run (cpu or cuda; other types get fp32 unmeasured).
        width: the model's embedding width (the timed product is (256, width) x (width, 4 width)).
        timer: ``(device, width) -> (speedup, seconds)``; the tests pass a fake one.
    """
    return measured_choice(device, machine_key(device, width), lambda: (timer or measure_bf16_speedup)(device, width)[0],
                           "bf16 matmul")


def measured_choice(device: torch.device, key: str, measure: Callable[[], float], what: str,
                    threshold: float = MIN_SPEEDUP) -> PrecisionChoice:
    """The verdict for ``key``: its cached bf16 / fp32 speed ratio, else ``measure()`` (then cached);
    bf16 at ``threshold`` or above, else fp32. ``what`` names the timed work in the one-line reason
    ("bf16 matmul", "a bf16 training step of this model ran"). Devices other than cpu / cuda, and
    GPUs without bf16, get fp32 unmeasured."""
    if device.type not in ("cpu", "cuda"):
        return PrecisionChoice("fp32", 1.0, False, f"precision auto -> fp32: bf16 speed is not measured on {device.type}")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return PrecisionChoice("fp32", 1.0, False, "precision auto -> fp32: this GPU has no bf16 support")
    path = cache_file()
    table = read_cache(path)
    cached = key in table
    speedup = float(table[key]) if cached else measure()
    if not cached:
        table[key] = speedup
        write_cache(path, table)
    where = "this GPU" if device.type == "cuda" else "this CPU"
    how = f"measured, cached in {path}" if not cached else f"cached measurement from {path}"
    if speedup >= threshold:
        return PrecisionChoice("bf16", speedup, cached,
                               f"precision auto -> bf16: {what} {speedup:.2f}x fp32 on {where} ({how})")
    return PrecisionChoice("fp32", speedup, cached, f"precision auto -> fp32: {what} {speedup:.2f}x fp32 on {where}, "
                                                    f"below the {threshold}x needed to switch ({how})")


def read_cache(path: Path) -> dict[str, float]:
    # A missing or damaged cache is measured again, never an error: it only saves 0.3 s.
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, (int, float))}


def write_cache(path: Path, table: dict[str, float]) -> None:
    try:
        atomic_write(path, lambda f: f.write(json.dumps(table, indent=1, sort_keys=True).encode()))
    except (OSError, VitlabError):  # a read-only or full home: the choice stands, measured again next time
        pass
