"""Inference over a loader: all logits of a classifier, and a filled classification meter."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from tqdm import tqdm

from vitlab.evaluation.metrics import ClassificationMeter
from vitlab.utils.device import autocast


@torch.no_grad()
def predict_logits(
    model: nn.Module, loader: Iterable, device: torch.device, precision: str, progress: bool = False, desc: str = "eval"
) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits (N, C) float32 on CPU and targets (N,) of a loader, in loader order (eval mode)."""
    model.eval()
    outs, tgts = [], []
    for images, targets in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        with autocast(device, precision):
            logits = model(images.to(device, non_blocking=True))
        outs.append(logits.float().cpu())
        tgts.append(targets.cpu())
    return torch.cat(outs), torch.cat(tgts)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    precision: str,
    num_classes: int,
    progress: bool = False,
    desc: str = "eval",
) -> ClassificationMeter:
    """Run ``model`` over ``loader`` in eval mode and return the filled meter."""
    logits, targets = predict_logits(model, loader, device, precision, progress, desc)
    meter = ClassificationMeter(num_classes=num_classes)
    meter.update(logits, targets)
    return meter
