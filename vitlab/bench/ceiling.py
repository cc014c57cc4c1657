"""The physical limit of this run: matrix-multiply GFLOP/s in fp32 and bf16 on the bench's device.

A square (n, n) x (n, n) product is the most efficient thing the hardware does (no memory-bound
steps, no launch overhead at this size), so a model's achieved GFLOP/s is read against it. Both
precisions run in the same interleaved rounds, on new random operands each call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vitlab.bench.stats import interleave, summarize
from vitlab.bench.timing import timed

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def default_size(device: torch.device, quick: bool) -> int:
    """2048 on a CPU (~0.1 s a product at 150 GFLOP/s), 8192 on a GPU; 256 / 1024 in quick runs."""
    if device.type == "cuda":
        return 1024 if quick else 8192
    return 256 if quick else 2048


def matmul_ceiling(device: torch.device, n: int, rounds: int, warmup: int = 1) -> dict[str, dict]:
    """Per dtype: GFLOP/s of ``a @ b`` for (n, n) operands: median, min and max over the rounds."""
    variants = {}
    for name, dtype in DTYPES.items():
        make = _operands(n, dtype, device)
        variants[name] = timed(lambda ab: ab[0] @ ab[1], make, device)
    flops = 2.0 * n ** 3
    stats = summarize(interleave(variants, rounds, warmup), items=flops / 1e9, reference=None)
    return {name: {"gflops_median": s["rate_median"], "gflops_min": s["rate_min"], "gflops_max": s["rate_max"],
                   "n": n, "rounds": s["rounds"]} for name, s in stats.items()}


def _operands(n: int, dtype: torch.dtype, device: torch.device) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    return lambda: (torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype))
