"""ONNX Runtime on the CPU, running vitlab's own ONNX export (fp32, or int8 quantized from it)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from vitlab.runtime.base import Predictor
from vitlab.runtime.quantize import quantize_dynamic_int8, quantize_static_int8
from vitlab.runtime.source import export_graph


def session_options(threads: int):
    """All graph optimisations on; as many intra-op threads as torch uses, so comparisons are fair."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # warnings from the optimiser about unused initialisers are noise here
    return opts


class OnnxRuntimePredictor(Predictor):
    """An ``onnxruntime.InferenceSession`` over the exported graph (dynamic batch axis)."""

    name = "onnxruntime"

    def __init__(self, model: nn.Module, precision: str, batch_size: int,
                 calibration: torch.Tensor | None = None) -> None:
        import onnxruntime as ort

        self.precision, self.batch_size = precision, batch_size
        self.tolerance = 1e-4 if precision == "fp32" else None
        self.quantization = None
        with tempfile.TemporaryDirectory(prefix="vitlab-ort-") as tmp:
            path = export_graph(model.cpu())
            if precision == "int8" and calibration is None:
                path, self.quantization = quantize_dynamic_int8(path, Path(tmp) / "int8.onnx"), "dynamic"
            elif precision == "int8":
                path = quantize_static_int8(path, Path(tmp) / "int8.onnx", calibration)
                self.quantization = f"static ({calibration.shape[0]} calibration images)"
            # the session reads the whole file now, so the temporary folder can go
            self.session = ort.InferenceSession(str(path), session_options(torch.get_num_threads()),
                                                providers=["CPUExecutionProvider"])

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(["logits"], {"images": images.float().contiguous().numpy()})
        return torch.from_numpy(logits)

    def describe(self) -> str:
        extra = f", {self.quantization} quantization" if self.quantization else ""
        return f"{self.name} {self.precision} (batch {self.batch_size}{extra})"
