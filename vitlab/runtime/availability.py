"""Which runtimes this installation and this machine can run, and why not when they cannot.

Each runtime states what it needs (a package, a C++ compiler for inductor, hardware bf16) and the
extra that installs it, so a refusal is one line that names the flag and the fix.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache

import torch

from vitlab.errors import ConfigError
from vitlab.runtime.base import RUNTIME_NAMES

# What each runtime can run at all; the hardware may narrow it further (bf16, see below).
SUPPORTED: dict[str, tuple[str, ...]] = {
    "eager": ("fp32", "bf16", "fp16"),
    "compiled": ("fp32", "bf16"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16"),
}
_EXTRA = {"onnxruntime": "vitlab[onnx]", "openvino": "vitlab[openvino]"}


@dataclass(frozen=True)
class RuntimeInfo:
    """One runtime: whether it runs here, why not, and the precisions it offers on this machine."""

    name: str
    available: bool
    reason: str
    precisions: tuple[str, ...]


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@lru_cache(maxsize=1)
def cpp_compiler() -> str | None:
    """The C++ compiler inductor would use on the CPU, or None when there is none."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception:  # no compiler found on PATH or $CXX: inductor cannot build CPU kernels
        return None


@lru_cache(maxsize=1)
def openvino_capabilities() -> tuple[str, ...]:
    """OpenVINO's own report of the CPU's optimisations, e.g. ('BF16', 'FP32', 'INT8', ...)."""
    import openvino as ov

    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _missing(name: str) -> str | None:
    """Why ``name`` cannot run in this installation, or None when it can."""
    if name == "compiled":
        return None if cpp_compiler() else "inductor needs a C++ compiler (g++ or clang++ on PATH, or $CXX)"
    if name == "onnxruntime":
        needs = [m for m in ("onnxruntime", "onnx", "onnxscript") if not _has(m)]
    elif name == "openvino":
        needs = [m for m in ("openvino", "onnx", "onnxscript") if not _has(m)]
    else:
        return None
    return f"{', '.join(needs)} not installed (pip install '{_EXTRA[name]}')" if needs else None


def _precisions(name: str) -> tuple[str, ...]:
    """SUPPORTED narrowed to this hardware: bf16 only where the CPU computes it natively."""
    out = SUPPORTED[name]
    if name == "openvino" and "BF16" not in openvino_capabilities():
        out = tuple(p for p in out if p != "bf16")
    return out


def list_runtimes() -> list[RuntimeInfo]:
    """Every runtime vitlab knows, available or not (with the reason)."""
    infos = []
    for name in RUNTIME_NAMES:
        reason = _missing(name)
        infos.append(RuntimeInfo(name, reason is None, reason or "", _precisions(name) if reason is None else ()))
    return infos


def require(name: str, precision: str, device: torch.device) -> None:
    """Raise a one-line ConfigError naming the flag when ``name`` cannot run ``precision`` here."""
    if name not in RUNTIME_NAMES:
        raise ConfigError(f"--runtime: unknown runtime {name!r} ({', '.join(('auto',) + RUNTIME_NAMES)})")
    reason = _missing(name)
    if reason:
        raise ConfigError(f"--runtime {name}: {reason}")
    if name in ("onnxruntime", "openvino") and device.type != "cpu":
        raise ConfigError(f"--runtime {name} runs on the CPU here: use --device cpu (or --runtime eager / compiled)")
    if precision == "int8" and name == "openvino":
        raise ConfigError("--precision int8 with --runtime openvino needs nncf, which vitlab does not install: "
                          "use --runtime onnxruntime --precision int8")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs CUDA; use bf16 or fp32")
    if precision not in SUPPORTED[name]:
        offers = ", ".join(SUPPORTED[name])
        hint = "; int8 runs on --runtime onnxruntime" if precision == "int8" else ""
        raise ConfigError(f"--precision {precision} is not offered by --runtime {name} (it runs {offers}){hint}")
    if precision not in _precisions(name):
        raise ConfigError(f"--precision {precision} with --runtime {name}: this CPU has no native bf16 "
                          "(OpenVINO reports no BF16 capability); use fp32")
