"""Optimizers with the usual ViT weight-decay exemptions, and warmup + cosine schedules."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

OptimizerName = Literal["adamw", "adam", "sgd"]

# Parameters that should not be decayed: norms and biases (1-D), position embeddings, class token.
_NO_DECAY_NAMES = ("pos_embed", "cls_token", "dist_token")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weight matrices, and undecayed biases / norms / embeddings / tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or any(key in name for key in _NO_DECAY_NAMES):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    model: nn.Module,
    name: OptimizerName,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD (with momentum) over :func:`param_groups`."""
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; expected adamw, adam or sgd")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier at ``step``: linear warmup from ~0 to 1, then cosine decay to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr: float, base_lr: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR implementing :func:`warmup_cosine` (state is just the step counter)."""
    min_ratio = min_lr / base_lr if base_lr > 0 else 0.0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps, min_ratio)
    )
