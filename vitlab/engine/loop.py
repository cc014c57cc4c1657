"""One epoch of training and one pass of evaluation, with explicit arguments (DESIGN rule 5)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from vitlab.errors import NonFiniteError
from vitlab.evaluation.metrics import ClassificationMeter
from vitlab.utils.device import autocast


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    precision: str,
    epoch: int,
    start_step: int,
    label_smoothing: float = 0.0,
    clip_grad: float | None = None,
    max_steps: int | None = None,
    log_every: int = 20,
    log: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """Train for one pass over ``loader``; the scheduler steps once per optimizer step.

    Stops with :class:`NonFiniteError` (naming the step) before applying an update whose loss is
    not finite. Returns {"train_loss", "train_top1", "steps", "images", "seconds"}.
    """
    model.train()
    total = len(loader) if hasattr(loader, "__len__") else None
    if max_steps is not None and total is not None:
        total = min(total, max_steps)
    bar = tqdm(total=total, desc=f"epoch {epoch}", disable=not progress, leave=False, dynamic_ncols=True)
    loss_sum, correct, seen, steps = 0.0, 0, 0, 0
    t0 = tick = time.perf_counter()
    tick_images = 0
    for images, targets in loader:
        if max_steps is not None and steps >= max_steps:
            break
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(images)
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
        step = start_step + steps
        if not math.isfinite(loss.item()):
            raise NonFiniteError(f"step {step} (epoch {epoch}): loss is {loss.item()}; no update applied")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if clip_grad is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        steps += 1
        n = targets.shape[0]
        loss_sum += loss.item() * n
        correct += int((logits.argmax(1) == targets).sum())
        seen += n
        tick_images += n
        if steps % log_every == 0 or steps == total:
            now = time.perf_counter()
            rate = tick_images / max(now - tick, 1e-9)
            lr = optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
            if log is not None:
                log({"kind": "train", "epoch": epoch, "step": step + 1, "loss": loss.item(), "lr": lr, "images_per_s": rate})
            tick, tick_images = now, 0
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    return {
        "train_loss": loss_sum / max(seen, 1),
        "train_top1": 100.0 * correct / max(seen, 1),
        "steps": steps,
        "images": seen,
        "seconds": seconds,
    }


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
    model.eval()
    meter = ClassificationMeter(num_classes=num_classes)
    for images, targets in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(images)
        meter.update(logits.float(), targets)
    return meter
