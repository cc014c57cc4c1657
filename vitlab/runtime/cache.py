"""The runtime ``auto`` chose, remembered per machine and model so the measured check runs once.

The key names what the speed depends on: the processor (model name and the flags that change
kernels), the thread count, the library versions, the model's architecture (not its weights),
the batch and the precision. The file is JSON, rewritten atomically; an unreadable one is
treated as empty (it only caches a measurement).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitlab.errors import VitlabError
from vitlab.utils.atomic import atomic_write

FILE_NAME = "runtime_choice.json"
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")


@lru_cache(maxsize=1)
def _cpu() -> str:
    """CPU model name and the kernel-relevant flags it has (Linux /proc/cpuinfo; else platform)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())
    return f"{name} [{' '.join(f for f in _FLAGS if f in flags)}]"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def machine_key(device: torch.device) -> str:
    """Processor, threads and library versions, as one string."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    libs = ",".join(f"{p}={_version(p)}" for p in ("torch", "onnxruntime", "openvino"))
    return f"{_cpu()}|{gpu}|threads={torch.get_num_threads()}|{libs}"


def model_key(model: nn.Module) -> str:
    """The architecture: class and config (weights do not change the speed)."""
    cfg = getattr(model, "config", None)
    desc = cfg.to_dict() if hasattr(cfg, "to_dict") else repr(cfg)
    return f"{type(model).__name__}:{json.dumps(desc, sort_keys=True, default=str)}"


def entry_key(model: nn.Module, device: torch.device, batch_size: int, precision: str) -> str:
    raw = f"{machine_key(device)}|{model_key(model)}|batch={batch_size}|{precision}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _path(cache_dir: str | Path | None) -> Path:
    """``cache_dir``, else ``$VITLAB_CACHE``, else ``~/.cache/vitlab`` (as the precision check's cache)."""
    folder = cache_dir if cache_dir is not None else (os.environ.get("VITLAB_CACHE") or "~/.cache/vitlab")
    return Path(folder).expanduser() / FILE_NAME


def read_choice(key: str, cache_dir: str | Path | None) -> dict[str, Any] | None:
    """The cached entry (``runtime``, ``speedup``, ``measured``) for ``key``, or None."""
    try:
        return json.loads(_path(cache_dir).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def write_choice(key: str, entry: dict[str, Any], cache_dir: str | Path | None) -> Path:
    """Add ``entry`` under ``key``; returns the file. A cache that cannot be written is skipped."""
    path = _path(cache_dir)
    try:
        table = json.loads(path.read_text())
        table = table if isinstance(table, dict) else {}
    except (OSError, ValueError):
        table = {}
    table[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(table, indent=1, sort_keys=True).encode()
        atomic_write(path, lambda f: f.write(data))
    except (OSError, VitlabError):
        pass  # a read-only home only costs re-measuring next time
    return path
