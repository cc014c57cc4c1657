"""The one training engine: any :class:`~vitlab.engine.task.Task`, one process or torchrun.

``fit`` owns the epoch loop, exact resume, checkpoints and their cadence, SIGTERM / SIGINT,
DDP / FSDP2, SyncBatchNorm, accumulation, clipping, EMA, the non-finite policy, logging (JSONL,
TensorBoard, progress bar) and the end-of-run plots. Tasks supply data, loss and evaluation.

Exactness of resume rests on four things: the sampler's order is a function of (seed, epoch) and
its position is checkpointed; each sample's augmentation is seeded by (seed, epoch, index); every
epoch starts from RNG streams seeded by (seed, epoch), and a mid-epoch checkpoint carries the RNG
states of its step; the epoch's running totals travel with the checkpoint.
"""

from __future__ import annotations

import random
import time
from functools import partial
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from vitlab.engine import distributed
from vitlab.weights.vitlab_format import save_weights
from vitlab.engine.ema import ModelEma
from vitlab.engine.loop import EpochTotals, StepOptions, train_one_epoch
from vitlab.engine.nonfinite import NonFiniteGuard, check_epoch
from vitlab.engine.parallel import full_weights, optimizer_state, wrap
from vitlab.engine.restore import Restored, find_checkpoint, position_of, restore
from vitlab.engine.resume import remove_stale_temp, save_resumable
from vitlab.engine.rng import rng_state, set_rng_state
from vitlab.engine.rundir import RunDir
from vitlab.engine.sampler import ResumableSampler, epoch_seed
from vitlab.engine.session import Session
from vitlab.engine.settings import EngineSettings
from vitlab.engine.signals import StopRequest
from vitlab.engine.sync_bn import convert_sync_batchnorm
from vitlab.engine.tracking import TensorBoard, write_plots
from vitlab.errors import ConfigError
from vitlab.engine.task import Task
from vitlab.utils.cpu_memory import kept_cpu_memory

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]
ScheduleFactory = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LambdaLR]


@dataclass
class FitResult:
    """What a finished (or stopped) run reports."""

    run_dir: Path
    best_metric: str
    best_value: float
    best_epoch: int
    last_metrics: dict[str, float]
    seconds: float
    exit_code: int = 0  # 143 / 130 when stopped by SIGTERM / SIGINT after checkpointing
    is_main: bool = True  # False on the non-zero ranks of a distributed run (they print nothing)
    test_metrics: dict[str, float] = field(default_factory=dict)  # filled by the caller (test split, once)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def steps_per_epoch(size: int, s: EngineSettings, world_size: int, drop_last: bool) -> int:
    """Optimizer steps in an epoch of ``size`` samples (raises ConfigError when none would run)."""
    global_batch = s.batch_size * world_size
    if global_batch > size and drop_last:
        raise ConfigError(f"data.batch_size={s.batch_size} x {world_size} process(es) exceeds the {size} "
                          "training samples and drop_last is on: no batch would run")
    batches = ResumableSampler(size, global_batch, s.seed, 0, drop_last=drop_last).num_batches()
    steps = batches // s.accum_steps
    if s.max_steps_per_epoch:
        steps = min(steps, s.max_steps_per_epoch)
    if steps < 1:
        raise ConfigError(f"optim.accum_steps={s.accum_steps} exceeds the {batches} batches of an epoch")
    return steps


def _build(task: Task, model: nn.Module, s: EngineSettings, make_optimizer: OptimizerFactory,
           make_schedule: ScheduleFactory, run: RunDir, info: distributed.DistInfo, device: torch.device,
           weights: dict[str, torch.Tensor] | None, echo: Callable[[str], None]) -> Session:
    if s.fsdp and s.ema_decay:
        raise ConfigError("fsdp and ema.decay cannot be combined yet: the EMA needs unsharded weights")
    if not s.ema_validate_raw and not (s.ema_decay and s.best_metric.startswith("ema_")):
        raise ConfigError(f"ema.validate_raw=false validates only the EMA weights: it needs ema.decay and an ema_ "
                          f"checkpoint.best_metric (got {s.ema_decay}, {s.best_metric})")
    n_steps = steps_per_epoch(len(task.train_data), s, info.world_size, task.drop_last)  # type: ignore[arg-type]
    if weights is not None:  # before sharding / wrapping
        from vitlab.weights.vitlab_format import load_state_checked

        load_state_checked(model, weights, str(run.checkpoints))
    model = model.to(device)
    if s.sync_bn if s.sync_bn is not None else info.enabled:
        model, converted = convert_sync_batchnorm(model, device)
        if converted and info.enabled:
            echo(f"SyncBatchNorm: {converted} BatchNorm layer(s) normalise over all {info.world_size} processes")
    ema = ModelEma(model, s.ema_decay, s.ema_warmup) if s.ema_decay else None
    # Wrap first: FSDP2 swaps the parameters for sharded ones, and the optimizer must hold those.
    wrapped = wrap(model, info, device, s.fsdp, s.compile, task.find_unused_parameters)
    optimizer = make_optimizer(model)
    scheduler = make_schedule(optimizer, n_steps)
    scaler = torch.amp.GradScaler("cuda") if s.precision == "fp16" else None
    return Session(task, model, wrapped, optimizer, scheduler, scaler, ema, s, run, info, device, n_steps, echo)


def _checkpoint(ss: Session, epoch: int, batch: int, step: int, best: tuple[float, int], totals: EpochTotals,
                guard: NonFiniteGuard, last: dict[str, float]) -> None:
    """A resumable checkpoint pair at ``step`` (``batch`` global batches into ``epoch``)."""
    state = {"epoch": epoch, "batch_in_epoch": batch, "best_value": best[0], "best_epoch": best[1],
             "optimizer": optimizer_state(ss.model, ss.optimizer, ss.info, ss.s.fsdp),
             "scheduler": ss.scheduler.state_dict(), "scaler": ss.scaler.state_dict() if ss.scaler is not None else {},
             "ema": ss.ema.state_dict() if ss.ema is not None else {}, "rng": rng_state(),
             "totals": totals.reduced(ss.info, ss.device).to_state(), "nonfinite_in_a_row": guard.in_a_row,
             "position": position_of(ss), "data": ss.task.data_fingerprint()}
    full = full_weights(ss.model, ss.info, ss.s.fsdp)
    if ss.info.is_main:
        info = {"epoch": epoch, **ss.task.checkpoint_info(), **last}
        save_resumable(ss.run, step, ss.model, ss.task.class_names, info, state, ss.s.keep, full)
    distributed.barrier(ss.info)


def _loader(ss: Session, epoch: int, start_batch: int) -> DataLoader:
    sampler = ResumableSampler(len(ss.task.train_data), ss.s.batch_size * ss.info.world_size, ss.s.seed,  # type: ignore[arg-type]
                               epoch, start_batch, ss.info.rank, ss.info.world_size, drop_last=ss.task.drop_last)
    # An explicit generator: creating the iterator draws a base seed from it, which would
    # otherwise shift the global RNG (dropout, stochastic depth) differently after a resume.
    return DataLoader(ss.task.train_data, batch_size=ss.s.batch_size, sampler=sampler, num_workers=ss.s.workers,
                      collate_fn=ss.task.collate, pin_memory=ss.device.type == "cuda",
                      generator=torch.Generator().manual_seed(epoch_seed(ss.s.seed, epoch)))


def _validate(ss: Session, epoch: int, step: int, best: tuple[float, int]) -> tuple[dict[str, float], tuple[float, int]]:
    """Validation metrics (and the EMA's); writes ``best.safetensors`` when the chosen metric improves."""
    # ema_validate_raw is false only with an EMA (checked in _build)
    last = ss.task.evaluate(ss.model, ss.device, ss.s.precision, ss.info, "val_") if ss.s.ema_validate_raw else {}
    if ss.ema is not None:
        last.update(ss.task.evaluate(ss.ema.module, ss.device, ss.s.precision, ss.info, "ema_val_"))
    metric = ss.s.best_metric
    if metric not in last:
        raise ConfigError(f"checkpoint.best_metric={metric!r} is not among the validation metrics: "
                          f"{', '.join(sorted(last))}")
    if ss.task.is_better(metric, last[metric], best[0]):
        best = (last[metric], epoch)
        use_ema = metric.startswith("ema_")
        full = None if use_ema else full_weights(ss.model, ss.info, ss.s.fsdp)
        if ss.info.is_main:
            source = ss.ema.module if use_ema and ss.ema is not None else ss.model
            info = {"epoch": epoch, "step": step, **ss.task.checkpoint_info(), **last}
            save_weights(ss.run.weights("best"), source, ss.task.class_names, info, full)
    return last, best


def _epoch_record(ss: Session, epoch: int, step: int, totals: EpochTotals, lr: float) -> dict[str, Any]:
    t = totals.reduced(ss.info, ss.device)
    return {"kind": "epoch", "epoch": epoch, "step": step, "train_loss": t.loss_sum / max(t.images, 1),
            **ss.task.summarize(t.sums, t.images, t.micro_batches), "steps": t.steps, "skipped": t.skipped,
            "images": t.images, "seconds": t.seconds, "lr": lr}


def _log(ss: Session, record: dict[str, Any]) -> None:
    if ss.info.is_main:
        ss.run.log(record)
        if ss.tb is not None:
            ss.tb.log(record)


def fit(task: Task, model: nn.Module, settings: EngineSettings, make_optimizer: OptimizerFactory,
        make_schedule: ScheduleFactory, run: RunDir, resume: bool, device: torch.device,
        info: distributed.DistInfo = distributed.DistInfo(), progress: bool = True,
        echo: Callable[[str], None] = print, on_started: Callable[[], None] | None = None) -> FitResult:
    """Train ``model`` on ``task`` into ``run`` (or continue it when ``resume``).

    ``make_optimizer(model)`` and ``make_schedule(optimizer, steps_per_epoch)`` are built from the
    run's current config, also on resume: a changed, allowed field (``--allow-change optim.lr``)
    then takes effect from the resume step. ``on_started`` runs once the state is restored
    (the caller writes config.yaml there).
    """
    if info.is_main:
        stale = remove_stale_temp(run)
        if stale:
            echo(f"removed {len(stale)} temporary file(s) left by an interrupted save: "
                 + ", ".join(p.name for p in stale))
    found = find_checkpoint(run) if resume else None
    ss = _build(task, model, settings, make_optimizer, make_schedule, run, info, device,
                found.weights if found is not None else None, echo)
    ss.progress = progress and info.is_main
    st = restore(ss, found) if found is not None else Restored.fresh(settings.best_metric)
    if on_started is not None and info.is_main:
        on_started()
    ss.tb = TensorBoard(run.root / "tb", settings.tensorboard and info.is_main)
    n_params = sum(p.numel() for p in ss.model.parameters())
    echo(f"training {getattr(model, 'model_name', None) or type(model).__name__} ({n_params:,} parameters) on "
         f"{task.describe()}; device {device}, {settings.precision}"
         + (f", {info.world_size} processes" if info.enabled else ""))
    t_start = time.perf_counter()
    with StopRequest() as stop, kept_cpu_memory(device, echo):
        exit_code = _epochs(ss, st, stop)
    ss.tb.close()
    if info.is_main:
        write_plots(run.metrics, run.root)
    return FitResult(run.root, settings.best_metric, st.best[0], st.best[1], st.last, time.perf_counter() - t_start,
                     exit_code, info.is_main)


def _epochs(ss: Session, st: Restored, stop: StopRequest) -> int:
    """The epoch loop from the restored position; returns the exit code (0, or 128 + signal)."""
    s, opts = ss.s, StepOptions(ss.s.precision, ss.s.clip_grad, ss.s.accum_steps, ss.s.log_every, ss.s.seed)
    guard = NonFiniteGuard(s.nonfinite, s.max_bad_steps, st.in_a_row)
    for epoch in range(st.epoch, s.epochs):
        if st.rng is not None and st.batch_in_epoch > 0:
            set_rng_state(st.rng)  # mid-epoch resume: continue the saved RNG streams of that step
        else:
            seed_everything(epoch_seed(s.seed, epoch))  # every epoch starts from its own streams
        if hasattr(ss.task.train_data, "set_epoch"):
            ss.task.train_data.set_epoch(epoch)
        totals = st.totals if st.batch_in_epoch > 0 else EpochTotals()
        loader = _loader(ss, epoch, st.batch_in_epoch)
        steps_before = totals.steps

        def on_step_end(step: int, epoch: int = epoch, totals: EpochTotals = totals) -> bool:
            stop_now = distributed.broadcast_flag(stop.requested, ss.info, ss.device)
            if stop_now or (s.checkpoint_every and step % s.checkpoint_every == 0):
                _checkpoint(ss, epoch, totals.steps * s.accum_steps, step, st.best, totals, guard, st.last)
            return stop_now

        stopped = train_one_epoch(ss.task, ss.wrapped, loader, ss.optimizer, ss.scheduler, ss.device, epoch, st.step,
                                  opts, ss.steps_per_epoch, totals, guard, ss.ema, ss.scaler, ss.info, partial(_log, ss),
                                  on_step_end, ss.progress)
        st.step += totals.steps - steps_before
        st.batch_in_epoch = 0
        if stopped:
            ss.echo(f"stopped by signal {stop.signum} at step {st.step}; checkpoint written")
            return stop.exit_code
        check_epoch(totals.skipped, totals.steps, s.max_skipped_fraction, epoch)
        record = _epoch_record(ss, epoch, st.step, totals, _last_used_lr(ss))
        if (epoch + 1) % s.eval_every == 0 or epoch == s.epochs - 1:
            st.last, st.best = _validate(ss, epoch, st.step, st.best)
            record.update(st.last)
        _log(ss, record)
        _checkpoint(ss, epoch + 1, 0, st.step, st.best, EpochTotals(), guard, st.last)
        ss.echo(f"epoch {epoch + 1}/{s.epochs}: " + ss.task.epoch_line(record))
    return 0


def _last_used_lr(ss: Session) -> float:
    """The largest group rate of the last step taken (the schedule has already moved one step on)."""
    step = ss.scheduler.last_epoch - 1
    return max(base * fn(step) for base, fn in zip(ss.scheduler.base_lrs, ss.scheduler.lr_lambdas))
