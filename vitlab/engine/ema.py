"""Exponential moving average of the weights (Polyak averaging, as DeiT and timm use)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """Keeps ``ema = decay * ema + (1 - decay) * weights`` after every optimizer step.

    Floating-point parameters and buffers are averaged; integer buffers (BatchNorm counters) are
    copied. The EMA model is a separate module in eval mode, never trained directly.

    Args:
        model: the model being trained (unwrapped, not DDP).
        decay: per-step decay, e.g. 0.9998 for ImageNet-length runs, ~0.99 for short runs.
        warmup: use ``min(decay, (1 + n) / (10 + n))`` at update n so early averages are not stale.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup = decay, warmup
        self.updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if target.dtype.is_floating_point:
                target.mul_(d).add_(value.detach(), alpha=1.0 - d)
            else:
                target.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"weights": {k: v.detach().cpu() for k, v in self.module.state_dict().items()}, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
