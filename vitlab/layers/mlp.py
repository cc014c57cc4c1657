"""The Transformer block's two-layer MLP."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Activation = Literal["gelu", "gelu_tanh", "relu"]


def make_activation(name: Activation) -> nn.Module:
    """The activation by name; ``gelu_tanh`` is the tanh approximation MindSpore and JAX use."""
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r}; expected gelu, gelu_tanh or relu")


class Mlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2 -> dropout (ViT paper, Eq. 3)."""

    def __init__(
        self, dim: int, hidden_dim: int, act: Activation = "gelu", drop: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = make_activation(act)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, dim) -> (B, T, dim)."""
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
