"""Device and numeric-precision choice in one place."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import nullcontext
from typing import ContextManager, Literal

import torch

from vitlab.errors import ConfigError

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Purpose = Literal["train", "infer"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, else mps if available, else cpu; otherwise as named."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: unknown device {name!r} (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device


def resolve_precision(precision: Precision, device: torch.device, purpose: Purpose = "train", width: int = 768,
                      say: Callable[[str], None] | None = None) -> str:
    """The precision to run in: ``precision`` checked, or what ``auto`` resolves to on ``device``.

    ``auto`` for ``purpose="infer"`` is measured (:func:`vitlab.utils.precision.choose_precision`:
    bf16 where a bf16 matmul at the model's ``width`` runs at least 1.15x fp32 here, cached per
    machine) and ``say`` gets the one line that states the choice and why (default: stderr).
    ``auto`` for training keeps the rule the recipes were tuned under (bf16 on CUDA with bf16
    support, fp32 on CPUs): bf16 training has not yet been shown to reach fp32's accuracy on the
    CPU recipes, so it is used there only when asked for (``--precision bf16``).
    """
    if precision == "auto":
        if purpose == "infer":
            from vitlab.utils.precision import choose_precision  # torch timing: only when auto is asked for

            choice = choose_precision(device, width)
            (say or _stderr)(choice.reason)
            return choice.precision
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs CUDA (it uses gradient scaling); use bf16 or fp32")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"--precision: unknown value {precision!r} (auto, fp32, bf16, fp16)")
    return precision


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def autocast(device: torch.device, precision: str) -> ContextManager:
    """Autocast context for bf16 / fp16, or a no-op for fp32."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
