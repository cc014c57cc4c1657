"""The machine a bench ran on: CPU model and flags, GPU, library versions, threads."""

from __future__ import annotations

import importlib.metadata
import os
import platform

import torch

from vitlab.utils.precision import BF16_FLAGS, cpu_facts

PEER_PACKAGES = ("timm", "transformers", "torchvision", "onnxruntime", "openvino", "onnx")


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_record(device: torch.device) -> dict:
    """JSON-ready facts that decide the speed: CPU (model, bf16/AMX/AVX-512 flags), GPU, versions, threads."""
    facts = cpu_facts()
    record = {
        "cpu": facts["cpu"], "cpu_flags": facts["flags"], "flags_checked": list(BF16_FLAGS),
        "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    record.update({name: package_version(name) for name in PEER_PACKAGES})
    return record
