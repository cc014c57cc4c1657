"""One epoch of training and one pass of evaluation, with explicit arguments (DESIGN rule 5)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from vitlab.data.mixup import MixupCutmix
from vitlab.engine.distributed import DistInfo, all_reduce_mean
from vitlab.engine.ema import ModelEma
from vitlab.engine.sampler import epoch_seed
from vitlab.errors import NonFiniteError
from vitlab.evaluation.metrics import ClassificationMeter
from vitlab.utils.device import autocast


@dataclass(frozen=True)
class StepOptions:
    """How each optimizer step is taken."""

    precision: str = "fp32"
    label_smoothing: float = 0.0
    clip_grad: float | None = None
    accum_steps: int = 1
    nonfinite: Literal["stop", "skip"] = "stop"
    log_every: int = 10
    seed: int = 0  # seeds the per-step Mixup / CutMix generator


def _loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    if targets.ndim == 2:  # soft targets from Mixup / CutMix (smoothing already applied)
        return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    epoch: int,
    start_step: int,
    opts: StepOptions,
    steps_in_epoch: int,
    ema: ModelEma | None = None,
    mixup: MixupCutmix | None = None,
    scaler: torch.amp.GradScaler | None = None,
    dist_info: DistInfo = DistInfo(),
    log: Callable[[dict[str, Any]], None] | None = None,
    on_step_end: Callable[[int], bool] | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train until the loader is exhausted, ``steps_in_epoch`` steps are done, or ``on_step_end`` says stop.

    ``start_step`` is the global optimizer step the loader starts at. A step whose loss or gradient
    norm is not finite is never applied: with ``nonfinite="stop"`` it raises
    :class:`NonFiniteError` naming the step and the part, with ``"skip"`` it is dropped and counted.
    ``on_step_end(global_step)`` runs after each optimizer step (checkpointing); True stops early.

    Returns {"train_loss", "train_top1", "steps", "images", "seconds", "skipped", "stopped"}.
    """
    model.train()
    bar = tqdm(total=steps_in_epoch, desc=f"epoch {epoch}", disable=not progress, leave=False, dynamic_ncols=True)
    loss_sum = correct = seen = steps = skipped = 0
    stopped = False
    t0 = tick = time.perf_counter()
    tick_images = 0
    micro, step_loss, step_images = 0, 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        step = start_step + steps
        hard_targets = targets
        if mixup is not None:
            gen = torch.Generator().manual_seed(epoch_seed(opts.seed, step * opts.accum_steps + micro))
            images, targets = mixup(images, targets, gen)
        with autocast(device, opts.precision):
            logits = model(images)
        loss = _loss(logits, targets, opts.label_smoothing)
        if not math.isfinite(loss.item()):
            if opts.nonfinite == "stop":
                raise NonFiniteError(f"step {step} (epoch {epoch}): loss is {loss.item()}; the update was not applied")
        scaled = loss / opts.accum_steps
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        micro += 1
        step_loss += loss.item()
        step_images += hard_targets.shape[0]
        correct += int((logits.argmax(1) == hard_targets).sum())
        if micro < opts.accum_steps:
            continue
        if scaler is not None:
            scaler.unscale_(optimizer)
        max_norm = opts.clip_grad if opts.clip_grad is not None else float("inf")
        grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), max_norm))
        bad = None if math.isfinite(step_loss) else "loss"
        bad = bad or (None if math.isfinite(grad_norm) or scaler is not None else "gradient norm")
        if bad is not None and opts.nonfinite == "stop":
            raise NonFiniteError(f"step {step} (epoch {epoch}): {bad} is not finite; the update was not applied")
        if bad is not None:
            skipped += 1
        elif scaler is not None:
            scaler.step(optimizer)  # skips the update itself when fp16 gradients overflowed
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if ema is not None and bad is None:
            ema.update(_unwrap(model))
        step_loss = all_reduce_mean([step_loss / opts.accum_steps], dist_info, device)[0]
        steps += 1
        loss_sum += step_loss * step_images
        seen += step_images
        tick_images += step_images * dist_info.world_size
        if steps % opts.log_every == 0 or steps == steps_in_epoch:
            now = time.perf_counter()
            rate = tick_images / max(now - tick, 1e-9)
            lr = max(g["lr"] for g in optimizer.param_groups)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
            if log is not None:
                log({"kind": "train", "epoch": epoch, "step": step + 1, "loss": step_loss, "lr": lr,
                     "grad_norm": grad_norm, "images_per_s": rate})
            tick, tick_images = now, 0
        bar.update(1)
        micro, step_loss, step_images = 0, 0.0, 0
        if on_step_end is not None and on_step_end(step + 1):
            stopped = True
            break
        if steps >= steps_in_epoch:
            break
    bar.close()
    return {
        "train_loss": loss_sum / max(seen, 1),
        "train_top1": 100.0 * correct / max(seen, 1),
        "steps": steps,
        "images": seen * dist_info.world_size,
        "seconds": time.perf_counter() - t0,
        "skipped": skipped,
        "stopped": stopped,
    }


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


@torch.no_grad()
def predict_logits(
    model: nn.Module, loader: Iterable, device: torch.device, precision: str, progress: bool = False, desc: str = "eval"
) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits (N, C) float32 on CPU and targets (N,) of a loader, in loader order."""
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
