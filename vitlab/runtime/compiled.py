"""Compiled torch: inductor with frozen weights, one graph for the predictor's batch size.

``freezing`` lets inductor treat the weights as constants (folding them, pre-packing them for
oneDNN's matrix multiplies on the CPU); it requires ``torch.no_grad()``, which every call here
runs under. The graph is compiled for a static batch: a shorter batch (the tail of a dataset) is
padded with zeros up to it and cut after, instead of compiling a second graph for it (~10-60 s).
"""

from __future__ import annotations

import torch
from torch import nn

from vitlab.errors import ConfigError
from vitlab.runtime.base import Predictor
from vitlab.runtime.source import input_shape
from vitlab.utils.device import autocast


class CompiledPredictor(Predictor):
    """``torch.compile(model, options={"freezing": True})``, compiled and checked at construction."""

    name = "compiled"

    def __init__(self, model: nn.Module, precision: str, batch_size: int, device: torch.device) -> None:
        self.precision, self.batch_size, self.device = precision, batch_size, device
        self.tolerance = 1e-4 if precision == "fp32" else None
        self.shape = input_shape(model)
        self.compiled = torch.compile(model.eval(), dynamic=False, options={"freezing": True})
        try:  # compile now, so a machine that cannot compile says so before any data is read
            self._forward(torch.zeros(batch_size, *self.shape, device=device))
        except Exception as err:  # inductor's failures are many types (BackendCompilerFailed, CppCompileError, ...)
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise ConfigError(f"--runtime compiled: inductor could not compile this model here ({first}); "
                              "use --runtime eager, onnxruntime or auto") from err

    @torch.no_grad()
    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.compiled(images)

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        images = images.to(self.device)
        if n < self.batch_size:
            pad = images.new_zeros(self.batch_size - n, *images.shape[1:])
            images = torch.cat([images, pad])
        return self._forward(images)[:n]
