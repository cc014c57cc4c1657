"""Stochastic depth (Huang et al. 2016): drop a residual branch per sample during training."""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Zero the residual branch for a random subset of samples and rescale the rest.

    Args:
        drop_prob: probability of dropping the branch for each sample.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, ...) -> same shape."""
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
