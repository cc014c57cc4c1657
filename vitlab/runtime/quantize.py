"""int8 ONNX graphs with ONNX Runtime's quantizer: dynamic (no data) or static (a calibration set).

Dynamic quantization stores the weights of every MatMul / Gemm as int8 and quantizes the
activations per batch at run time, so it needs no data and tracks each batch's range. Static
quantization fixes the activation ranges from calibration images (QDQ format, per-channel
weights) and so quantizes more of the graph; its ranges are only as good as the calibration set.
The patch-embedding convolution stays fp32 in both: it is a small share of the work and its
integer kernel (ConvInteger) is slower than the float one on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

_OPS = ["MatMul", "Gemm"]


def _prepared(src: Path, dst: Path) -> Path:
    """The graph with shapes inferred and folded, as ONNX Runtime's quantizer asks to be fed."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst))
    return dst


def quantize_dynamic_int8(src: Path, dst: Path) -> Path:
    """int8 weights, activations quantized per batch; returns ``dst``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    prepared = _prepared(src, dst.with_suffix(".prepared.onnx"))
    quantize_dynamic(str(prepared), str(dst), op_types_to_quantize=_OPS, weight_type=QuantType.QInt8)
    return dst


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over a tensor of images (N, C, H, W), in chunks."""

    def __init__(self, images: torch.Tensor, batch: int) -> None:
        self.chunks = iter([images[i:i + batch].float().numpy() for i in range(0, images.shape[0], batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self.chunks, None)
        return None if chunk is None else {"images": chunk}


def quantize_static_int8(src: Path, dst: Path, calibration: torch.Tensor, batch: int = 16) -> Path:
    """int8 weights (per channel) and activations with ranges from ``calibration`` (N, C, H, W)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    reader = type("Reader", (_Calibration, CalibrationDataReader), {})(calibration, batch)
    prepared = _prepared(src, dst.with_suffix(".prepared.onnx"))
    quantize_static(str(prepared), str(dst), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=_OPS,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst
