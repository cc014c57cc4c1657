"""A classification run: config -> model, data, task -> the one engine (:mod:`vitlab.engine.fit`).

This is the one place that reads a whole :class:`~vitlab.config.TrainConfig`; the engine, the
task, data and models take explicit arguments. ``vitlab train`` is a thin wrapper, and the same
code runs as one process or under ``torchrun``. Inputs are validated before the run folder is
created, so bad input never touches a run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset

from vitlab.config import RESUME_SAFE, TrainConfig, check_resume_config, save_config
from vitlab.data import AugmentConfig, ImageFolderDataset, Preprocess, build_eval_transform, build_train_transform, open_source
from vitlab.data.cache import cache_folder
from vitlab.data.mixup import MixupCutmix
from vitlab.data.seeded import SeededTransform
from vitlab.engine import distributed
from vitlab.engine.fit import FitResult, fit, seed_everything
from vitlab.engine.optim import build_optimizer, build_scheduler
from vitlab.engine.rundir import RunDir, claim_run_dir
from vitlab.engine.settings import settings_from_config
from vitlab.errors import ConfigError, DataError
from vitlab.api import create_model
from vitlab.tasks.classification import ClassificationTask
from vitlab.utils.device import resolve_device, resolve_precision

TrainResult = FitResult  # the name callers have used since the first release


@dataclass
class _Prepared:
    model: torch.nn.Module
    train_ds: SeededTransform
    val_ds: Dataset
    classes: list[str]
    device: torch.device
    precision: str


def _open_data(cfg: TrainConfig, pre: Preprocess) -> tuple[Dataset, Dataset]:
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
    return train_raw, val_ds


def _prepare(cfg: TrainConfig) -> _Prepared:
    """Build the model and open the data; raise on any bad input before anything is written."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    seed_everything(cfg.seed)  # the model's initial weights are a function of the seed
    probe = create_model(cfg.model, **cfg.model_args)  # validates the name and options early
    pre = Preprocess.from_config(probe.config)
    train_raw, val_ds = _open_data(cfg, pre)
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
        seed_everything(cfg.seed)
        probe = create_model(cfg.model, **{**cfg.model_args, "num_classes": len(classes)})
    if cfg.init.weights or cfg.init.pretrained:
        from vitlab.weights.hub import load_weights_into

        load_weights_into(probe, cfg.model, pretrained=cfg.init.pretrained, weights=cfg.init.weights,
                          resample=cfg.init.resample)
    aug = AugmentConfig(**dataclasses.asdict(cfg.data.augment))
    train_ds = SeededTransform(train_raw, build_train_transform(pre, aug), cfg.seed)
    return _Prepared(probe, train_ds, val_ds, classes, device, precision)


def _task(cfg: TrainConfig, prep: _Prepared) -> ClassificationTask:
    mixup = None
    if cfg.mixup.mixup_alpha > 0 or cfg.mixup.cutmix_alpha > 0:
        mixup = MixupCutmix(len(prep.classes), cfg.mixup.mixup_alpha, cfg.mixup.cutmix_alpha, cfg.mixup.prob,
                            cfg.mixup.switch_prob, cfg.optim.label_smoothing)
    return ClassificationTask(prep.train_ds, prep.val_ds, prep.classes, cfg.optim.label_smoothing, mixup,
                              cfg.data.eval_batch_size, cfg.data.workers, cfg.max_eval_images, cfg.data.drop_last)


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
    say = echo if info.is_main else (lambda s: None)
    if info.is_main:
        if resume:
            check_resume_config(run.config, cfg, TrainConfig, RESUME_SAFE, allow_changes, say)
        run = claim_run_dir(out, overwrite=overwrite, resume=resume)
    device = distributed.init(info, prep.device)
    distributed.barrier(info)
    o = cfg.optim

    def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(model, o.name, o.lr, o.weight_decay, o.momentum, o.betas, o.layer_decay)

    def make_schedule(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
        return build_scheduler(optimizer, cfg.epochs * steps, int(o.warmup_epochs * steps), o.min_lr, o.lr)

    try:
        return fit(_task(cfg, prep), prep.model, settings_from_config(cfg, prep.precision), make_optimizer,
                   make_schedule, run, resume, device, info, progress and info.is_main, say, lambda: save_config(cfg, run.config))
    finally:
        distributed.shutdown(info)
