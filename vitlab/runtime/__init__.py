"""Inference runtimes behind one interface: eager torch, compiled torch, ONNX Runtime, OpenVINO.

>>> from vitlab.runtime import load_runtime, list_runtimes
>>> predict = load_runtime("best.safetensors", runtime="onnxruntime", precision="int8", batch_size=32)
>>> logits = predict(images)  # images (B, 3, H, W) preprocessed as the checkpoint says -> (B, K)

Every runtime but eager is fed vitlab's own ONNX export or a frozen compiled graph of the same
model, and is checked against eager: fp32 within 1e-4 on the logits, reduced precision by top-1
agreement (tests/test_runtimes.py).
"""

from vitlab.runtime.availability import RuntimeInfo, list_runtimes
from vitlab.runtime.base import PRECISIONS, RUNTIME_NAMES, Predictor
from vitlab.runtime.load import load_runtime

__all__ = ["PRECISIONS", "RUNTIME_NAMES", "Predictor", "RuntimeInfo", "list_runtimes", "load_runtime"]
