"""One named runtime built for a model: checks what it needs, then constructs its Predictor."""

from __future__ import annotations

import torch
from torch import nn

from vitlab.runtime.availability import require
from vitlab.runtime.base import Predictor


def build_predictor(model: nn.Module, runtime: str, precision: str, batch_size: int, device: torch.device,
                    calibration: torch.Tensor | None = None) -> Predictor:
    """The Predictor of ``runtime`` at ``precision`` for ``model`` (eval mode, already on ``device``).

    ``calibration`` (N, C, H, W) preprocessed images switch ONNX Runtime's int8 from dynamic to
    static quantization; other runtimes refuse it rather than ignore it.
    """
    require(runtime, precision, device)
    if calibration is not None and not (runtime == "onnxruntime" and precision == "int8"):
        from vitlab.errors import ConfigError

        raise ConfigError("calibration images are used by --runtime onnxruntime --precision int8 only")
    if runtime == "eager":
        from vitlab.runtime.eager import EagerPredictor

        return EagerPredictor(model, precision, batch_size, device)
    if runtime == "compiled":
        from vitlab.runtime.compiled import CompiledPredictor

        return CompiledPredictor(model, precision, batch_size, device)
    if runtime == "onnxruntime":
        from vitlab.runtime.onnxrt import OnnxRuntimePredictor

        return OnnxRuntimePredictor(model, precision, batch_size, calibration)
    from vitlab.runtime.openvino_rt import OpenVinoPredictor

    return OpenVinoPredictor(model, precision, batch_size)
