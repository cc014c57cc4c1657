"""LayerScale (Touvron et al. 2021, "Going deeper with Image Transformers", CaiT, Eq. 4).

A learned per-channel scale on each residual branch, initialised small (1e-5 / 1e-6), so that a
deep network starts close to the identity. DeiT-III and DINOv2 use it; timm names the parameter
``gamma`` (``blocks.{i}.ls1.gamma`` / ``ls2.gamma``), and so does vitlab.
"""

from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """x -> x * gamma, gamma of shape (dim,) initialised to ``init_values``.

    Args:
        dim: channel width D (the last axis of the input).
        init_values: the initial value of every entry of gamma.
    """

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gamma, self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., D) -> (..., D)."""
        return x * self.gamma

    def extra_repr(self) -> str:
        return f"dim={self.gamma.shape[0]}, init_values={self.init_values}"
