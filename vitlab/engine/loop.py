"""One epoch of training for any task, with explicit arguments (DESIGN rule 5).

The task supplies the loss of a micro-batch (:meth:`vitlab.engine.task.Task.step`); this module
owns accumulation, clipping, the non-finite policy, the fp16 scaler, EMA updates, the per-step
log and the epoch totals (which are checkpointed, so a resumed epoch reports the whole epoch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from vitlab.engine.distributed import DistInfo, all_reduce_mean, all_reduce_sum_tensor
from vitlab.engine.ema import ModelEma
from vitlab.engine.nonfinite import NonFiniteGuard
from vitlab.engine.sampler import epoch_seed
from vitlab.engine.task import Task


@dataclass(frozen=True)
class StepOptions:
    """How each optimizer step is taken."""

    precision: str = "fp32"
    clip_grad: float | None = None
    accum_steps: int = 1
    log_every: int = 10
    seed: int = 0  # seeds the per-micro-batch generator handed to the task (Mixup / CutMix)


@dataclass
class EpochTotals:
    """Running totals of one epoch; part of every mid-epoch checkpoint.

    ``steps`` counts optimizer steps taken this epoch (skipped ones included), ``images`` and
    ``micro_batches`` what this rank consumed, ``loss_sum`` the sum of (step loss x step images)
    and ``sums`` the task's additive statistics.
    """

    steps: int = 0
    skipped: int = 0
    images: int = 0
    micro_batches: int = 0
    loss_sum: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_state(self) -> dict[str, Any]:
        return {"steps": self.steps, "skipped": self.skipped, "images": self.images,
                "micro_batches": self.micro_batches, "loss_sum": self.loss_sum, "sums": dict(self.sums),
                "seconds": self.seconds}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochTotals:
        return cls(int(state["steps"]), int(state["skipped"]), int(state["images"]), int(state["micro_batches"]),
                   float(state["loss_sum"]), {k: float(v) for k, v in state["sums"].items()}, float(state["seconds"]))

    def reduced(self, info: DistInfo, device: torch.device) -> EpochTotals:
        """Totals over all ranks (a copy; steps are the same on every rank and kept)."""
        if not info.enabled:
            return EpochTotals(**{**self.to_state(), "sums": dict(self.sums)})
        keys = sorted(self.sums)
        t = torch.tensor([self.images, self.loss_sum, *[self.sums[k] for k in keys]], dtype=torch.float64, device=device)
        t = all_reduce_sum_tensor(t, info).cpu().tolist()
        return EpochTotals(self.steps, self.skipped, int(t[0]), self.micro_batches * info.world_size, t[1],
                           dict(zip(keys, t[2:])), self.seconds)


def _apply(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
           clip_grad: float | None) -> tuple[float, float]:
    """Unscale, clip; returns (raw gradient norm, norm after clipping)."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    max_norm = clip_grad if clip_grad is not None else float("inf")
    raw = float(nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    # clip_grad_norm_ scales by max_norm / (norm + 1e-6) when that is below 1: the same factor here.
    clipped = raw * min(1.0, max_norm / (raw + 1e-6)) if math.isfinite(raw) else raw
    return raw, clipped


def _update(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is not None:
        scaler.step(optimizer)  # skips the update itself when fp16 gradients overflowed
        scaler.update()
    else:
        optimizer.step()


@dataclass
class _Micro:
    """What the micro-batches of the current optimizer step have added up to."""

    count: int = 0
    loss: float = 0.0
    images: int = 0
    bad: str | None = None
    sums: dict[str, float] = field(default_factory=dict)
    log: dict[str, float] = field(default_factory=dict)


def _forward_backward(task: Task, model: nn.Module, batch: Any, device: torch.device, opts: StepOptions,
                      scaler: torch.amp.GradScaler | None, micro: _Micro, seed: int) -> None:
    out = task.step(model, batch, device, opts.precision, seed)
    value = float(out.loss.item())
    micro.count += 1
    micro.images += out.images
    micro.loss += value
    for k, v in out.sums.items():
        micro.sums[k] = micro.sums.get(k, 0.0) + v
    micro.log = out.log
    if not math.isfinite(value):
        micro.bad = micro.bad or f"loss ({value})"
        return  # no backward of a non-finite loss: the step is dropped (or the run stops) anyway
    scaled = out.loss / opts.accum_steps
    (scaler.scale(scaled) if scaler is not None else scaled).backward()


def train_one_epoch(
    task: Task,
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    epoch: int,
    start_step: int,
    opts: StepOptions,
    steps_in_epoch: int,
    totals: EpochTotals,
    guard: NonFiniteGuard,
    ema: ModelEma | None = None,
    scaler: torch.amp.GradScaler | None = None,
    dist_info: DistInfo = DistInfo(),
    log: Callable[[dict[str, Any]], None] | None = None,
    on_step_end: Callable[[int], bool] | None = None,
    progress: bool = True,
) -> bool:
    """Train until ``steps_in_epoch`` optimizer steps are done in this epoch (``totals.steps``
    counts those already done before a resume), the loader ends, or ``on_step_end`` says stop.

    ``start_step`` is the global step of the loader's first batch. ``on_step_end(global_step)``
    runs after each optimizer step (checkpointing); True stops early. Returns True when stopped.
    """
    model.train()
    bar = tqdm(total=steps_in_epoch, initial=totals.steps, desc=f"epoch {epoch}", disable=not progress, leave=False,
               dynamic_ncols=True)
    t0, tick, tick_images = time.perf_counter(), time.perf_counter(), 0
    micro, step, stopped = _Micro(), start_step, False
    optimizer.zero_grad(set_to_none=True)
    for batch in loader:
        seed = epoch_seed(opts.seed, step * opts.accum_steps + micro.count)
        _forward_backward(task, model, batch, device, opts, scaler, micro, seed)
        if micro.count < opts.accum_steps:
            continue
        record = _finish_step(model, optimizer, scheduler, device, epoch, step, opts, totals, guard, ema, scaler,
                              dist_info, micro)
        tick_images += micro.images * dist_info.world_size
        if totals.steps % opts.log_every == 0 or totals.steps == steps_in_epoch or record["kind"] != "train":
            now = time.perf_counter()
            record["images_per_s"] = tick_images / max(now - tick, 1e-9)
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", img_s=f"{record['images_per_s']:.0f}")
            if log is not None:
                log(record)
            tick, tick_images = now, 0
        elif log is not None:  # the lr curve is drawn from every step (warmup visible), not every log_every-th
            log({"kind": "lr", "epoch": epoch, "step": record["step"], "lr": record["lr"]})
        bar.update(1)
        step, micro = step + 1, _Micro()
        if on_step_end is not None and on_step_end(step):
            stopped = True
            break
        if totals.steps >= steps_in_epoch:
            break
    bar.close()
    totals.seconds += time.perf_counter() - t0
    return stopped


def _plain(model: nn.Module) -> nn.Module:
    """The trained module under its wrappers (DDP's ``.module``, torch.compile's ``_orig_mod``), whose
    state-dict keys are the EMA copy's."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _finish_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                 device: torch.device, epoch: int, step: int, opts: StepOptions, totals: EpochTotals,
                 guard: NonFiniteGuard, ema: ModelEma | None, scaler: torch.amp.GradScaler | None,
                 dist_info: DistInfo, micro: _Micro) -> dict[str, Any]:
    """Clip, apply (or drop) the update, advance the schedule, add to the totals; returns the step's record."""
    raw = clipped = float("nan")
    if micro.bad is None:
        raw, clipped = _apply(model, optimizer, scaler, opts.clip_grad)
        if not math.isfinite(raw) and scaler is None:
            micro.bad = "gradient norm"
    ok = guard.check(micro.bad, step, epoch)
    lr = max(g["lr"] for g in optimizer.param_groups)  # the rate this step used, before the schedule moves on
    if ok:
        _update(optimizer, scaler)
        if ema is not None:
            ema.update(_plain(model))
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    step_loss = all_reduce_mean([micro.loss / micro.count], dist_info, device)[0]
    totals.steps += 1
    totals.micro_batches += micro.count
    if not ok:
        totals.skipped += 1
        return {"kind": "skipped_step", "epoch": epoch, "step": step + 1, "loss": step_loss, "lr": lr,
                "part": micro.bad, **micro.log}
    totals.images += micro.images
    totals.loss_sum += step_loss * micro.images
    for k, v in micro.sums.items():
        totals.sums[k] = totals.sums.get(k, 0.0) + v
    return {"kind": "train", "epoch": epoch, "step": step + 1, "loss": step_loss, "lr": lr, "grad_norm": raw,
            "grad_norm_clipped": clipped, **micro.log}
