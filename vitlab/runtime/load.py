"""``load_runtime``: a model, checkpoint or checkpoint file -> a Predictor of the named runtime."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from vitlab.errors import ConfigError
from vitlab.runtime.base import PRECISIONS, Predictor
from vitlab.runtime.factory import build_predictor
from vitlab.runtime.source import as_model
from vitlab.weights.vitlab_format import Checkpoint

log = logging.getLogger("vitlab.runtime")


def load_runtime(
    model_or_checkpoint: nn.Module | Checkpoint | str | Path,
    runtime: str = "eager",
    precision: str = "fp32",
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    calibration: torch.Tensor | None = None,
    cache_dir: str | Path | None = None,
) -> Predictor:
    """A Predictor: ``predictor(images (B, C, H, W) float32, preprocessed) -> logits (B, K) float32``.

    ``runtime``: ``eager`` (the reference), ``compiled`` (inductor, frozen weights), ``onnxruntime``,
    ``openvino``, or ``auto`` (the fastest of those here at this batch and precision, measured once
    and cached in ``cache_dir``, default ``$VITLAB_CACHE`` or ``~/.cache/vitlab``; its one-line reason is
    ``predictor.note`` and goes to the ``vitlab.runtime`` logger). ``precision``: fp32, bf16, fp16
    (CUDA), int8 (ONNX Runtime: dynamic quantization, or static with ``calibration`` images
    (N, C, H, W)). The compiled and frozen runtimes copy the weights as they are now: a model
    changed afterwards needs a new Predictor.

    Raises ConfigError (exit 2) naming the flag when the runtime, its package or the precision is
    not available here, with the extra to install.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision: unknown value {precision!r} ({', '.join(PRECISIONS)})")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    dev = torch.device(device)
    model = as_model(model_or_checkpoint, dev)
    if runtime != "auto":
        pred = build_predictor(model, runtime, precision, batch_size, dev, calibration)
        pred.note = f"runtime: {pred.describe()}"
        return pred
    if calibration is not None:
        raise ConfigError("calibration images need an explicit --runtime onnxruntime --precision int8")
    from vitlab.runtime.auto import choose

    pred, note = choose(model, precision, batch_size, dev, cache_dir)
    pred.note = note
    log.info(note)
    return pred

