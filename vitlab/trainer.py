"""Orchestration of a training run: config -> model, data, optimizer -> steps -> checkpoints.

This is the one place that reads a whole :class:`~vitlab.config.TrainConfig`; everything it
calls (engine, data, models) takes explicit arguments. ``vitlab train`` is a thin wrapper, and
the same code runs as one process or under ``torchrun`` (DDP). Inputs are validated before the
run folder is created, so bad input never touches a run.

Exactness of resume rests on three things: the sampler's order is a function of (seed, epoch)
and its position is checkpointed; each sample's augmentation is seeded by (seed, epoch, index);
the model's RNG state (dropout, stochastic depth) is saved with every checkpoint.
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
from torch.utils.data import DataLoader, Dataset

from vitlab.config import TrainConfig, config_diff, RESUME_SAFE, read_yaml, save_config, _build
from vitlab.data import AugmentConfig, ImageFolderDataset, Preprocess, build_eval_transform, build_train_transform, open_source
from vitlab.data.mixup import MixupCutmix
from vitlab.data.cache import cache_folder
from vitlab.data.seeded import SeededTransform
from vitlab.engine import distributed
from vitlab.engine.checkpoint import load_state_checked, save_weights
from vitlab.engine.ema import ModelEma
from vitlab.engine.loop import StepOptions, evaluate, train_one_epoch
from vitlab.engine.optim import build_optimizer, build_scheduler
from vitlab.engine.resume import find_resumable, save_resumable
from vitlab.engine.rng import rng_state, set_rng_state
from vitlab.engine.rundir import RunDir, claim_run_dir
from vitlab.engine.sampler import ResumableSampler, epoch_seed
from vitlab.engine.signals import StopRequest
from vitlab.engine.tracking import TensorBoard, truncate_records, write_plots
from vitlab.errors import CheckpointError, ConfigError, DataError
from vitlab.evaluation.metrics import ClassificationMeter
from vitlab.registry import create_model
from vitlab.utils.device import resolve_device, resolve_precision


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports."""

    run_dir: Path
    best_metric: str
    best_value: float
    best_epoch: int
    last_metrics: dict[str, float]
    seconds: float
    exit_code: int = 0  # 143 / 130 when stopped by SIGTERM / SIGINT after checkpointing
    is_main: bool = True  # False on the non-zero ranks of a distributed run (they print nothing)


@dataclass
class _Prepared:
    model: torch.nn.Module
    train_ds: SeededTransform
    val_ds: Dataset
    classes: list[str]
    device: torch.device
    precision: str


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _prepare(cfg: TrainConfig) -> _Prepared:
    """Build the model and open the data; raise on any bad input before anything is written."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    _seed_everything(cfg.seed)  # the model's initial weights are a function of the seed
    probe = create_model(cfg.model, **cfg.model_args)  # validates the name and options early
    pre = Preprocess.from_config(probe.config)
    aug = AugmentConfig(**dataclasses.asdict(cfg.data.augment))
    train_raw = open_source(cfg.data.train, "train", None, cfg.data.root)
    val_ds = open_source(cfg.data.val or cfg.data.train, "val", build_eval_transform(pre), cfg.data.root)
    if cfg.data.cache:  # decoding every file also verifies it
        if isinstance(train_raw, ImageFolderDataset):
            train_raw = cache_folder(train_raw, None)
        if isinstance(val_ds, ImageFolderDataset):
            val_ds = cache_folder(val_ds, val_ds.transform)
    for ds in (train_raw, val_ds):
        if isinstance(ds, ImageFolderDataset):
            ds.verify()
    classes = list(train_raw.classes)
    if list(val_ds.classes) != classes:
        extra = sorted(set(val_ds.classes) - set(classes))
        missing = sorted(set(classes) - set(val_ds.classes))
        raise DataError(f"validation classes differ from training classes: extra {extra}, missing {missing}")
    if len(train_raw) < cfg.data.batch_size and cfg.data.drop_last:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the {len(train_raw)} training "
                          "images and drop_last is on: no batch would run")
    if "num_classes" in cfg.model_args and cfg.model_args["num_classes"] != len(classes):
        raise ConfigError(f"model_args.num_classes={cfg.model_args['num_classes']} but the data has {len(classes)} classes")
    if probe.num_classes != len(classes):
        _seed_everything(cfg.seed)
        probe = create_model(cfg.model, **{**cfg.model_args, "num_classes": len(classes)})
    if cfg.init.weights or cfg.init.pretrained:
        from vitlab.weights.hub import load_weights_into

        load_weights_into(probe, cfg.model, pretrained=cfg.init.pretrained, weights=cfg.init.weights,
                          resample=cfg.init.resample)
    train_ds = SeededTransform(train_raw, build_train_transform(pre, aug), cfg.seed)
    return _Prepared(probe, train_ds, val_ds, classes, device, precision)


def _check_resume_config(run: RunDir, cfg: TrainConfig, allow: tuple[str, ...]) -> None:
    saved = _build(TrainConfig, read_yaml(run.config))
    differing = [f for f in config_diff(saved, cfg) if f not in RESUME_SAFE and f not in allow]
    if differing:
        raise ConfigError(f"cannot resume {run.root} with a different config: {', '.join(differing)} differ "
                          "(pass --allow-change FIELD to accept a change)")


def _wrap(model: torch.nn.Module, cfg: TrainConfig, info: distributed.DistInfo, device: torch.device) -> torch.nn.Module:
    """Data-parallel wrapper (DDP or FSDP2) and torch.compile, as configured."""
    wrapped = model
    if info.enabled and cfg.fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in getattr(model, "blocks", []):
            fully_shard(block)
        fully_shard(model)
    elif info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def _optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                     info: distributed.DistInfo) -> dict:
    """The optimizer's state; under FSDP gathered into full (unsharded) tensors on every rank."""
    if not (info.enabled and cfg.fsdp):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict, cfg: TrainConfig,
                          info: distributed.DistInfo) -> None:
    if not (info.enabled and cfg.fsdp):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def _full_weights(model: torch.nn.Module, cfg: TrainConfig, info: distributed.DistInfo) -> dict | None:
    """The full (unsharded) weights under FSDP, gathered on every rank; None otherwise."""
    if not (info.enabled and cfg.fsdp):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    allow_changes: tuple[str, ...] = (),
) -> TrainResult:
    """Run (or continue) training as configured; returns the best and last validation metrics."""
    info = distributed.from_environment()
    prep = _prepare(cfg)
    run = RunDir(out)
    if info.is_main:
        if resume:
            _check_resume_config(run, cfg, allow_changes)
        run = claim_run_dir(out, overwrite=overwrite, resume=resume)
    device = distributed.init(info, prep.device)
    distributed.barrier(info)
    try:
        return _fit(cfg, prep, run, resume, info, device, progress and info.is_main, echo if info.is_main else (lambda s: None))
    finally:
        distributed.shutdown(info)


def _fit(cfg: TrainConfig, prep: _Prepared, run: RunDir, resume: bool, info: distributed.DistInfo,
         device: torch.device, progress: bool, echo: Callable[[str], None]) -> TrainResult:
    model = prep.model.to(device)
    precision = prep.precision
    accum = cfg.optim.accum_steps
    global_batch = cfg.data.batch_size * info.world_size
    if cfg.fsdp and cfg.ema.decay:
        raise ConfigError("fsdp and ema.decay cannot be combined yet: the EMA needs unsharded weights")
    if global_batch > len(prep.train_ds) and cfg.data.drop_last:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} x {info.world_size} processes exceeds the dataset")
    probe_sampler = ResumableSampler(len(prep.train_ds), global_batch, cfg.seed, 0, drop_last=cfg.data.drop_last)
    steps_per_epoch = probe_sampler.num_batches() // accum
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise ConfigError(f"optim.accum_steps={accum} exceeds the {probe_sampler.num_batches()} batches of an epoch")
    found = None
    if resume:
        found = find_resumable(run)
        if found is None:
            raise CheckpointError(f"{run.checkpoints}: no valid checkpoint to resume from")
        load_state_checked(model, found.weights, str(found.weights_path))  # before sharding / wrapping
    ema = ModelEma(model, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.decay else None
    # Wrap first: FSDP2 swaps the parameters for sharded ones, and the optimizer must hold those.
    wrapped = _wrap(model, cfg, info, device)
    optimizer = build_optimizer(model, cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.momentum,
                                cfg.optim.betas, cfg.optim.layer_decay)
    scheduler = build_scheduler(optimizer, cfg.epochs * steps_per_epoch, int(cfg.optim.warmup_epochs * steps_per_epoch),
                                cfg.optim.min_lr, cfg.optim.lr)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    mixup = None
    if cfg.mixup.mixup_alpha > 0 or cfg.mixup.cutmix_alpha > 0:
        mixup = MixupCutmix(len(prep.classes), cfg.mixup.mixup_alpha, cfg.mixup.cutmix_alpha, cfg.mixup.prob,
                            cfg.mixup.switch_prob, cfg.optim.label_smoothing)
    metric = cfg.checkpoint.best_metric
    minimise = metric.endswith("loss") or metric.endswith("ece")
    best_value, best_epoch = (float("inf") if minimise else -float("inf")), -1
    start_epoch, batch_in_epoch, global_step = 0, 0, 0
    restored_rng = None
    if found is not None:
        st = found.state
        try:
            _load_optimizer_state(model, optimizer, st["optimizer"], cfg, info)
            scheduler.load_state_dict(st["scheduler"])
            if scaler is not None and st.get("scaler"):
                scaler.load_state_dict(st["scaler"])
            if ema is not None:
                ema.load_state_dict(st["ema"])
        except (KeyError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{found.weights_path}: training state does not fit this run ({err})") from None
        start_epoch, batch_in_epoch, global_step = int(st["epoch"]), int(st["batch_in_epoch"]), int(st["step"])
        best_value, best_epoch = float(st["best_value"]), int(st["best_epoch"])
        restored_rng = st["rng"]
        if info.is_main:
            truncate_records(run.metrics, global_step, start_epoch)
        echo(f"resuming {run.root} at step {global_step} (epoch {start_epoch + 1}, batch {batch_in_epoch})")
    if info.is_main:
        save_config(cfg, run.config)
    tb = TensorBoard(run.root / "tb", cfg.tensorboard and info.is_main)
    echo(f"training {cfg.model} ({sum(p.numel() for p in model.parameters()):,} parameters) on {len(prep.train_ds)} "
         f"images, {len(prep.classes)} classes; validating on {len(prep.val_ds)}; device {device}, {precision}"
         + (f", {info.world_size} processes" if info.enabled else ""))
    opts = StepOptions(precision, cfg.optim.label_smoothing, cfg.optim.clip_grad, accum, cfg.nonfinite, cfg.log_every, cfg.seed)

    def log(record: dict[str, Any]) -> None:
        if info.is_main:
            run.log(record)
            tb.log(record)

    def checkpoint(epoch: int, batch: int, step: int, last: dict[str, float]) -> None:
        state = {"epoch": epoch, "batch_in_epoch": batch, "best_value": best_value, "best_epoch": best_epoch,
                 "optimizer": _optimizer_state(model, optimizer, cfg, info), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict() if scaler is not None else {},
                 "ema": ema.state_dict() if ema is not None else {}, "rng": rng_state()}
        full = _full_weights(model, cfg, info)
        if info.is_main:
            save_resumable(run, step, model, prep.classes, {"epoch": epoch, **last}, state, cfg.checkpoint.keep, full)
        distributed.barrier(info)

    last: dict[str, float] = {}
    exit_code = 0
    t_start = time.perf_counter()
    with StopRequest() as stop:
        for epoch in range(start_epoch, cfg.epochs):
            if restored_rng is not None:
                set_rng_state(restored_rng)  # mid-run resume: continue the saved RNG streams
                restored_rng = None
            else:
                _seed_everything(epoch_seed(cfg.seed, epoch))
            done_steps = batch_in_epoch // accum
            prep.train_ds.set_epoch(epoch)
            sampler = ResumableSampler(len(prep.train_ds), global_batch, cfg.seed, epoch, batch_in_epoch,
                                       info.rank, info.world_size, drop_last=cfg.data.drop_last)
            # An explicit generator: creating the iterator draws a base seed from it, which would
            # otherwise shift the global RNG (dropout, stochastic depth) differently after a resume.
            loader = DataLoader(prep.train_ds, batch_size=cfg.data.batch_size, sampler=sampler,
                                num_workers=cfg.data.workers, pin_memory=device.type == "cuda",
                                generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch)))
            counter = {"steps": done_steps}

            def on_step_end(step: int, epoch: int = epoch) -> bool:
                counter["steps"] += 1
                stop_now = distributed.broadcast_flag(stop.requested, info, device)
                every = cfg.checkpoint.every_steps
                if stop_now or (every and step % every == 0):
                    checkpoint(epoch, counter["steps"] * accum, step, last)
                return stop_now

            stats = train_one_epoch(wrapped, loader, optimizer, scheduler, device, epoch, global_step, opts,
                                    steps_per_epoch - done_steps, ema, mixup, scaler, info, log, on_step_end, progress)
            global_step += stats["steps"]
            batch_in_epoch = 0
            if stats["stopped"]:
                exit_code = stop.exit_code
                echo(f"stopped by signal {stop.signum} at step {global_step}; checkpoint written")
                break
            record: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": global_step,
                                      **{k: v for k, v in stats.items() if k != "stopped"},
                                      "lr": max(g["lr"] for g in optimizer.param_groups)}
            if (epoch + 1) % cfg.eval_every == 0 or epoch == cfg.epochs - 1:
                last = _validate(model, prep, cfg, device, precision, info, "val_")
                if ema is not None:
                    last.update(_validate(ema.module, prep, cfg, device, precision, info, "ema_val_"))
                record.update(last)
                value = last[metric]
                if (value < best_value) if minimise else (value > best_value):
                    best_value, best_epoch = value, epoch
                    full = None if metric.startswith("ema_") else _full_weights(model, cfg, info)
                    if info.is_main:
                        source = ema.module if metric.startswith("ema_") else model
                        save_weights(run.weights("best"), source, prep.classes, {"epoch": epoch, "step": global_step, **last}, full)
            log(record)
            checkpoint(epoch + 1, 0, global_step, last)
            val = "".join(f", {k} {v:.2f}" for k, v in last.items() if k.endswith("top1")) if "val_top1" in record else ""
            echo(f"epoch {epoch + 1}/{cfg.epochs}: train loss {stats['train_loss']:.4f}, "
                 f"{stats['images'] / max(stats['seconds'], 1e-9):.0f} img/s{val}")
    tb.close()
    if info.is_main:
        write_plots(run.metrics, run.root)
    return TrainResult(run.root, metric, best_value, best_epoch, last, time.perf_counter() - t_start, exit_code,
                       info.is_main)


def _validate(model: torch.nn.Module, prep: _Prepared, cfg: TrainConfig, device: torch.device, precision: str,
              info: distributed.DistInfo, prefix: str) -> dict[str, float]:
    """Evaluate on this rank's share of the validation set and reduce the counts over ranks."""
    total = min(len(prep.val_ds), cfg.max_eval_images or len(prep.val_ds))
    indices = list(range(info.rank, total, info.world_size))
    loader = DataLoader(torch.utils.data.Subset(prep.val_ds, indices), batch_size=cfg.data.eval_batch_size,
                        num_workers=cfg.data.workers)
    meter = evaluate(model, loader, device, precision, len(prep.classes))
    if hasattr(model, "reshard"):  # FSDP2 keeps parameters unsharded after a no-grad forward
        model.reshard()
    if info.enabled:
        t = distributed.all_reduce_sum_tensor(meter.to_tensor().to(device), info).cpu()
        meter = ClassificationMeter(len(prep.classes))
        meter.from_tensor(t)
    return {f"{prefix}{k}": v for k, v in meter.result().items()}
