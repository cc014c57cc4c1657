"""One epoch of DETR training and one evaluation pass, with explicit arguments (DESIGN rule 5).

A step whose loss or gradient norm is not finite is skipped (no update) and counted; only
``max_bad_steps`` of them in a row stop the run with :class:`NonFiniteError`. NaN or degenerate
predicted boxes are sanitised by the criterion and counted (``bad_pred_boxes``).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from vitlab.detection.coco_eval import detections_to_coco
from vitlab.errors import NonFiniteError
from vitlab.models.detr.postprocess import postprocess
from vitlab.utils.device import autocast

_LOGGED = ("loss", "loss_ce", "loss_bbox", "loss_giou", "cardinality_error", "class_error")


def _to_device(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    precision: str,
    epoch: int,
    start_step: int,
    clip_grad: float | None = 0.1,
    max_steps: int | None = None,
    log_every: int = 20,
    log: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    max_bad_steps: int = 5,
) -> dict[str, float]:
    """Train one pass over ``loader`` (batches ``(images, mask, targets)``); the scheduler steps per update.

    Returns mean ``train_loss``, ``train_loss_ce`` / ``_bbox`` / ``_giou``, ``train_cardinality_error``,
    ``train_class_error`` over the steps, plus ``steps``, ``skipped_steps``, ``bad_pred_boxes``,
    ``images`` and ``seconds``.
    """
    model.train()
    criterion.train()
    total = len(loader) if hasattr(loader, "__len__") else None
    if max_steps is not None and total is not None:
        total = min(total, max_steps)
    bar = tqdm(total=total, desc=f"epoch {epoch}", disable=not progress, leave=False, dynamic_ncols=True)
    sums: dict[str, float] = defaultdict(float)
    steps = skipped = in_a_row = images_seen = bad_boxes = 0
    t0 = time.perf_counter()
    for images, mask, targets in loader:
        if max_steps is not None and steps + skipped >= max_steps:
            break
        step = start_step + steps + skipped
        images, mask = images.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        targets = _to_device(targets, device)
        with autocast(device, precision):
            outputs = model(images, mask)
        losses = criterion(outputs, targets)
        loss = losses["loss"]
        bad_boxes += int(losses["bad_pred_boxes"].item())
        optimizer.zero_grad(set_to_none=True)
        ok = math.isfinite(loss.item())
        if ok:
            loss.backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), clip_grad if clip_grad else float("inf"))
            ok = bool(torch.isfinite(norm))
        if not ok:
            skipped += 1
            in_a_row += 1
            if log is not None:
                log({"kind": "skipped_step", "epoch": epoch, "step": step, "loss": loss.item()})
            if in_a_row >= max_bad_steps:
                raise NonFiniteError(f"step {step} (epoch {epoch}): {in_a_row} steps in a row had a non-finite "
                                     "loss or gradient; stopping")
            bar.update(1)
            continue
        in_a_row = 0
        optimizer.step()
        scheduler.step()
        steps += 1
        images_seen += images.shape[0]
        for k in _LOGGED:
            sums[k] += float(losses[k].item())
        if steps % log_every == 0 or steps == total:
            lr = optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.1e}")
            if log is not None:
                log({"kind": "train", "epoch": epoch, "step": step + 1, "lr": lr,
                     **{k: float(losses[k].item()) for k in _LOGGED}})
        bar.update(1)
    bar.close()
    out = {f"train_{k}": sums[k] / max(steps, 1) for k in _LOGGED}
    return {**out, "steps": steps, "skipped_steps": skipped, "bad_pred_boxes": bad_boxes, "images": images_seen,
            "seconds": time.perf_counter() - t0}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    criterion: nn.Module | None,
    loader: Iterable,
    device: torch.device,
    precision: str,
    progress: bool = False,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Losses (if ``criterion``) and COCO-format detections (all slots, in original-image pixels).

    Returns (mean ``val_*`` losses and ``val_bad_pred_boxes``, result rows for :func:`coco_map`).
    """
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    batches = bad = 0
    results: list[dict[str, Any]] = []
    for images, mask, targets in tqdm(loader, desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        images, mask = images.to(device), mask.to(device)
        targets = _to_device(targets, device)
        with autocast(device, precision):
            outputs = model(images, mask)
        if criterion is not None:
            losses = criterion(outputs, targets)
            for k in _LOGGED:
                sums[k] += float(losses[k].item())
        batches += 1
        sizes = torch.stack([t["orig_size"] for t in targets])
        for t, det in zip(targets, postprocess(outputs, sizes)):
            bad += int(det["bad_boxes"])
            results += detections_to_coco(t["image_id"], det)
    stats = {f"val_{k}": v / max(batches, 1) for k, v in sums.items()}
    stats["val_bad_pred_boxes"] = bad
    return stats, results
