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
    ``auto`` for training without a model to time (``purpose="train"`` here) is the rule: bf16
    on CUDA with bf16 support, fp32 elsewhere; the trainers call :func:`resolve_train_precision`,
    which measures the model's own training step instead.
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


def resolve_train_precision(precision: Precision, device: torch.device, model: torch.nn.Module,
                            sample_shape: tuple[int, ...], batch: int, distributed: bool = False,
                            say: Callable[[str], None] | None = None) -> str:
    """The training precision: ``precision`` checked, or ``auto`` measured on ``model``'s own step.

    ``auto`` times forward + backward of a copy of ``model`` on a (``batch``, *``sample_shape``)
    random batch in fp32 and under bf16 autocast (:func:`vitlab.utils.train_precision.choose_train_precision`,
    cached per machine and model) and ``say`` gets the line with the choice and why. Under
    ``distributed`` (torchrun) every rank must train in the same precision and a timing per rank
    could disagree, so the rule of :func:`resolve_precision` applies there, and the line says so.
    """
    if precision != "auto":
        return resolve_precision(precision, device)
    if distributed:
        chosen = resolve_precision("auto", device)
        (say or _stderr)(f"precision auto -> {chosen}: not measured under torchrun (every rank must agree); "
                         "bf16 on CUDA with bf16 support, else fp32; --precision sets it")
        return chosen
    from vitlab.utils.train_precision import choose_train_precision  # torch timing: only when auto is asked for

    choice = choose_train_precision(model, sample_shape, batch, device)
    (say or _stderr)(choice.reason)
    return choice.precision


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def autocast(device: torch.device, precision: str) -> ContextManager:
    """Autocast context for bf16 / fp16, or a no-op for fp32."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
