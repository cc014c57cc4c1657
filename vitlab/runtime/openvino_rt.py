"""OpenVINO on the CPU, reading vitlab's own ONNX export; fp32, or bf16 where the CPU computes it.

OpenVINO's CPU plugin picks bf16 by itself on CPUs with AMX / avx512_bf16 unless told otherwise,
so the inference precision is always set explicitly: fp32 means fp32 here. The graph is reshaped
to the predictor's batch (static shapes let the plugin pick its kernels once); a shorter batch is
padded with zeros up to it and cut after.
"""

from __future__ import annotations

import torch
from torch import nn

from vitlab.runtime.base import Predictor
from vitlab.runtime.source import export_graph, input_shape

_HINT = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoPredictor(Predictor):
    """An OpenVINO compiled model over the exported graph, one synchronous request per batch."""

    name = "openvino"

    def __init__(self, model: nn.Module, precision: str, batch_size: int) -> None:
        import openvino as ov

        self.precision, self.batch_size = precision, batch_size
        self.tolerance = 1e-4 if precision == "fp32" else None
        core = ov.Core()
        graph = core.read_model(str(export_graph(model.cpu())))
        graph.reshape({"images": [batch_size, *input_shape(model)]})
        config = {"INFERENCE_PRECISION_HINT": _HINT[precision], "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        self.compiled = core.compile_model(graph, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        x = images.float().contiguous()
        if n < self.batch_size:
            x = torch.cat([x, x.new_zeros(self.batch_size - n, *x.shape[1:])])
        out = self.request.infer({"images": x.numpy()})
        return torch.from_numpy(out[self.compiled.output(0)].copy())[:n]
