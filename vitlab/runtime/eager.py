"""Eager torch: the reference every other runtime is checked against (bf16 / fp16 by autocast)."""

from __future__ import annotations

import torch
from torch import nn

from vitlab.runtime.base import Predictor
from vitlab.utils.device import autocast


class EagerPredictor(Predictor):
    """The model as it is, under ``torch.no_grad()`` and autocast for reduced precision."""

    name = "eager"

    def __init__(self, model: nn.Module, precision: str, batch_size: int, device: torch.device) -> None:
        self.model, self.precision, self.batch_size, self.device = model.eval(), precision, batch_size, device
        self.tolerance = 0.0 if precision == "fp32" else None

    @torch.no_grad()
    def _run(self, images: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.model(images.to(self.device))
