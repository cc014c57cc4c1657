"""The one interface every runtime offers: a Predictor maps images (B, C, H, W) to logits (B, K).

A Predictor is built once for a model, a precision and a batch size (the compiled and OpenVINO
graphs are specialised to it); calling it with any number of images runs them in chunks of that
batch size and returns float32 logits on the CPU, in input order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import torch

RuntimeName = Literal["eager", "compiled", "onnxruntime", "openvino"]
RuntimePrecision = Literal["fp32", "bf16", "fp16", "int8"]
RUNTIME_NAMES: tuple[str, ...] = ("eager", "compiled", "onnxruntime", "openvino")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8")


class Predictor(ABC):
    """``predictor(images)`` -> logits: images (B, C, H, W) float32, logits (B, K) float32 on CPU."""

    name: str
    precision: str
    batch_size: int
    # How far this runtime's logits may sit from eager fp32's on the same inputs: an absolute
    # bound for the fp32 runtimes; reduced precision is judged by top-1 agreement instead.
    tolerance: float | None = None
    note: str = ""  # what load_runtime chose and why, one line

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"images must be (B, C, H, W) with B >= 1, got shape {tuple(images.shape)}")
        outs = [self._run(images[i:i + self.batch_size]) for i in range(0, images.shape[0], self.batch_size)]
        return torch.cat(outs).float().cpu()

    @abstractmethod
    def _run(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (b, K) of at most ``batch_size`` images (b, C, H, W)."""

    def describe(self) -> str:
        """One line: runtime, precision and batch, e.g. ``onnxruntime int8 (batch 32)``."""
        return f"{self.name} {self.precision} (batch {self.batch_size})"

    def __repr__(self) -> str:
        return f"<Predictor {self.describe()}>"
