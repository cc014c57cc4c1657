"""Orchestration of a training run: config -> model, data, optimizer -> epochs -> checkpoints.

This is the one place that reads a whole :class:`~vitlab.config.TrainConfig`; everything it
calls (engine, data, models) takes explicit arguments. ``vitlab train`` is a thin wrapper.
Inputs are validated before the run folder is created, so bad input never touches a run.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from vitlab.config import TrainConfig, save_config
from vitlab.data import AugmentConfig, ImageFolderDataset, Preprocess, build_eval_transform, build_train_transform, open_source
from vitlab.engine.checkpoint import load_state, load_state_checked, read_metadata, read_tensors, save_state, save_weights
from vitlab.engine.loop import evaluate, train_one_epoch
from vitlab.engine.optim import build_optimizer, build_scheduler
from vitlab.engine.rundir import RunDir, claim_run_dir
from vitlab.errors import CheckpointError, ConfigError, DataError
from vitlab.registry import create_model
from vitlab.utils.device import resolve_device, resolve_precision


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    best_top1: float
    best_epoch: int
    last_metrics: dict[str, float]
    seconds: float


@dataclass
class _Prepared:
    model: torch.nn.Module
    train_ds: Dataset
    val_ds: Dataset
    classes: list[str]
    device: torch.device
    precision: str


def _prepare(cfg: TrainConfig) -> _Prepared:
    """Build the model and open the data; raise on any bad input before anything is written."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    _seed_everything(cfg.seed)  # the model's initial weights are a function of the seed
    probe = create_model(cfg.model, **cfg.model_args)  # validates the name and options early
    pre = Preprocess.from_config(probe.config)
    aug = AugmentConfig(**dataclasses.asdict(cfg.data.augment))
    train_ds = open_source(cfg.data.train, "train", build_train_transform(pre, aug), cfg.data.root)
    val_ds = open_source(cfg.data.val or cfg.data.train, "val", build_eval_transform(pre), cfg.data.root)
    for ds in (train_ds, val_ds):
        if isinstance(ds, ImageFolderDataset):
            ds.verify()
    classes = list(train_ds.classes)
    if list(val_ds.classes) != classes:
        extra = sorted(set(val_ds.classes) - set(classes))
        missing = sorted(set(classes) - set(val_ds.classes))
        raise DataError(f"validation classes differ from training classes: extra {extra}, missing {missing}")
    if len(train_ds) < cfg.data.batch_size and cfg.data.drop_last:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the {len(train_ds)} training "
                          "images and drop_last is on: no batch would run")
    if "num_classes" in cfg.model_args and cfg.model_args["num_classes"] != len(classes):
        raise ConfigError(f"model_args.num_classes={cfg.model_args['num_classes']} but the data has {len(classes)} classes")
    if probe.num_classes != len(classes):
        _seed_everything(cfg.seed)
        probe = create_model(cfg.model, **{**cfg.model_args, "num_classes": len(classes)})
    model = probe
    return _Prepared(model.to(device), train_ds, val_ds, classes, device, precision)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _loader(ds: Dataset, batch_size: int, workers: int, shuffle_seed: int | None, drop_last: bool) -> DataLoader:
    sampler = None
    if shuffle_seed is not None:
        # A fresh generator per epoch makes the order a function of (seed, epoch), so resuming at
        # an epoch boundary replays exactly the same batches.
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(shuffle_seed))
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
                      persistent_workers=False, pin_memory=torch.cuda.is_available())


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> TrainResult:
    """Run (or continue) training as configured; returns the best and last validation metrics."""
    prep = _prepare(cfg)
    run = claim_run_dir(out, overwrite=overwrite, resume=resume)
    model, device, precision = prep.model, prep.device, prep.precision
    steps_per_epoch = len(prep.train_ds) // cfg.data.batch_size if cfg.data.drop_last else -(-len(prep.train_ds) // cfg.data.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    optimizer = build_optimizer(model, cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.momentum, cfg.optim.betas)
    scheduler = build_scheduler(optimizer, cfg.epochs * steps_per_epoch, int(cfg.optim.warmup_epochs * steps_per_epoch),
                                cfg.optim.min_lr, cfg.optim.lr)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    start_epoch, best_top1, best_epoch, global_step = 0, -1.0, -1, 0
    if resume:
        start_epoch, best_top1, best_epoch, global_step = _restore(run, model, optimizer, scheduler, scaler)
        echo(f"resuming {run.root} at epoch {start_epoch}")
    save_config(cfg, run.config)
    echo(f"training {cfg.model} ({sum(p.numel() for p in model.parameters()):,} parameters) on {len(prep.train_ds)} "
         f"images, {len(prep.classes)} classes; validating on {len(prep.val_ds)}; device {device}, {precision}")
    val_loader = _loader(prep.val_ds, cfg.data.eval_batch_size, cfg.data.workers, None, False)
    t_start = time.perf_counter()
    last: dict[str, float] = {}
    for epoch in range(start_epoch, cfg.epochs):
        _seed_everything(cfg.seed * 100003 + epoch)
        loader = _loader(prep.train_ds, cfg.data.batch_size, cfg.data.workers, cfg.seed * 100003 + epoch, cfg.data.drop_last)
        stats = train_one_epoch(model, loader, optimizer, scheduler, device, precision, epoch, global_step,
                                cfg.optim.label_smoothing, cfg.optim.clip_grad, cfg.max_steps_per_epoch,
                                cfg.log_every, run.log, progress, scaler)
        global_step += stats["steps"]
        record: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": global_step, **stats,
                                  "lr": optimizer.param_groups[0]["lr"]}
        is_last = epoch == cfg.epochs - 1
        if (epoch + 1) % cfg.eval_every == 0 or is_last:
            meter = evaluate(model, val_loader, device, precision, len(prep.classes), progress)
            last = {f"val_{k}": v for k, v in meter.result().items()}
            record.update(last)
            if last["val_top1"] > best_top1:
                best_top1, best_epoch = last["val_top1"], epoch
                save_weights(run.weights("best"), model, prep.classes, {"epoch": epoch, "step": global_step, **last})
        run.log(record)
        info = {"epoch": epoch, "step": global_step, **last}
        save_weights(run.weights("last"), model, prep.classes, info)
        save_state(run.state("last"), {
            "epoch": epoch, "step": global_step, "best_top1": best_top1, "best_epoch": best_epoch,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
        })
        val = f", val top-1 {last['val_top1']:.2f}%, top-5 {last['val_top5']:.2f}%" if "val_top1" in record else ""
        echo(f"epoch {epoch + 1}/{cfg.epochs}: train loss {stats['train_loss']:.4f}, "
             f"{stats['images'] / max(stats['seconds'], 1e-9):.0f} img/s{val}")
    seconds = time.perf_counter() - t_start
    return TrainResult(run.root, best_top1, best_epoch, last, seconds)


def _restore(run: RunDir, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: Any) -> tuple[int, float, int, int]:
    """Load last weights and training state; returns (next epoch, best top-1, best epoch, step)."""
    state = load_state(run.state("last"))
    meta = read_metadata(run.weights("last"))
    if meta["info"].get("epoch") != state.get("epoch"):
        raise CheckpointError(f"{run.weights('last')}: weights are from epoch {meta['info'].get('epoch')} but the "
                              f"training state is from epoch {state.get('epoch')}")
    load_state_checked(model, read_tensors(run.weights("last")), str(run.weights("last")))
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{run.state('last')}: does not match this run's optimizer ({err})") from None
    return int(state["epoch"]) + 1, float(state["best_top1"]), int(state["best_epoch"]), int(state["step"])
