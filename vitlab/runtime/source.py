"""What a runtime is fed: the model (from a module, a loaded checkpoint or a file) and its ONNX graph.

The ONNX graph is vitlab's own export (:func:`vitlab.weights.export.export_onnx`, verified against
the model with onnxruntime on the way out), so ONNX Runtime and OpenVINO run exactly the graph
``vitlab export --format onnx`` writes.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from vitlab.errors import ConfigError
from vitlab.weights.vitlab_format import Checkpoint

# Exports of this process, by model fingerprint: building ONNX Runtime and OpenVINO for one model
# (as ``auto`` does) or a second predictor for it exports once (an export takes ~10 s to minutes).
_EXPORTS: dict[str, Path] = {}
_KEEP = 2
_folder: Path | None = None


def as_model(model_or_checkpoint: nn.Module | Checkpoint | str | Path, device: torch.device) -> nn.Module:
    """The model in eval mode on ``device``: from a module, a Checkpoint, or a checkpoint file."""
    if isinstance(model_or_checkpoint, (str, Path)):
        from vitlab.weights.rebuild import load_checkpoint

        model_or_checkpoint = load_checkpoint(model_or_checkpoint, device)
    model = model_or_checkpoint.model if isinstance(model_or_checkpoint, Checkpoint) else model_or_checkpoint
    if not isinstance(model, nn.Module):
        raise ConfigError(f"a runtime needs a model, a Checkpoint or a checkpoint path, got {type(model).__name__}")
    return model.to(device).eval()


def input_shape(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) the model takes, from its config."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise ConfigError(f"{type(model).__name__} has no config: build it with vitlab.create_model()")
    size = cfg.img_size
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return int(cfg.in_chans), h, w


def fingerprint(model: nn.Module) -> str:
    """SHA-256 over the model's class, config and every state tensor's bytes: same value, same graph."""
    h = hashlib.sha256(f"{type(model).__name__}{getattr(model, 'config', None)!r}".encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _exports_folder() -> Path:
    global _folder
    if _folder is None:
        _folder = Path(tempfile.mkdtemp(prefix="vitlab-graphs-"))
        atexit.register(shutil.rmtree, _folder, True)
    return _folder


def export_graph(model: nn.Module) -> Path:
    """``model`` (on the CPU, fp32) as vitlab's ONNX export, in a folder removed at exit; its path.

    The exporter's progress chatter goes to a buffer: a runtime's user asked for predictions,
    not for the exporter's report; a failed export still raises with its own message. The
    export verifies itself against the model (onnxruntime, 1e-4).
    """
    from vitlab.weights.export import export_onnx

    key = fingerprint(model)
    if key in _EXPORTS and _EXPORTS[key].is_file():
        return _EXPORTS[key]
    path = _exports_folder() / f"{key[:16]}.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        export_onnx(model, path)
    _EXPORTS[key] = path
    while len(_EXPORTS) > _KEEP:  # the oldest export goes: a long session loads many models
        _EXPORTS.pop(next(iter(_EXPORTS))).unlink(missing_ok=True)
    return path
