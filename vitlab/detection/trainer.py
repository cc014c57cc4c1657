"""A DETR run: config -> model, data, criterion -> the one engine (:mod:`vitlab.engine.fit`).

The one place that reads a whole :class:`DetectConfig`. Detection trains on the same engine as
classification, so it has the same run folder, exact resume (after SIGKILL too), a checkpoint on
SIGTERM, EMA, torchrun (2 processes equal to 1), the non-finite policy (skip up to
``max_bad_steps`` in a row by default) and logging. ``best`` is the checkpoint with the highest
validation AP (``checkpoint.best_metric``). Inputs are validated before the run folder is created.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch

from vitlab.config import check_resume_config, saved_precision
from vitlab.data.bad_samples import ImagePolicy
from vitlab.data.seeded import SeededSamples
from vitlab.detection.base import DetectionDataset
from vitlab.detection.config import DETECT_RESUME_SAFE, DetectConfig, save_detect_config
from vitlab.detection.sources import open_detection_source
from vitlab.detection.substitute import SubstitutingSamples
from vitlab.detection.transforms import build_eval_transform, build_train_transform
from vitlab.engine import distributed
from vitlab.engine.fit import FitResult, fit, seed_everything
from vitlab.engine.optim import warmup_cosine
from vitlab.engine.rundir import RunDir, claim_run_dir
from vitlab.engine.settings import settings_from_config
from vitlab.errors import ConfigError, DataError
from vitlab.models.detr import PRESETS, DetrConfig, HungarianMatcher, SetCriterion, create_detr
from vitlab.models.detr.backbone import ViTBackbone
from vitlab.tasks.detection import DetectionTask
from vitlab.utils.device import resolve_device, resolve_precision, resolve_train_precision

DetectResult = FitResult


def model_config(cfg: DetectConfig) -> DetrConfig:
    """The DetrConfig a run will build (validates the preset name and options)."""
    if cfg.model not in PRESETS:
        raise ConfigError(f"unknown DETR model {cfg.model!r}; known: {', '.join(sorted(PRESETS))}")
    return DetrConfig().replace(**PRESETS[cfg.model]).replace(**cfg.model_args)


def build_criterion(cfg: DetectConfig, mcfg: DetrConfig, num_classes: int) -> SetCriterion:
    """The set loss as configured; a sigmoid class head brings the focal loss and cost with it."""
    lo = cfg.loss
    focal = (lo.focal_alpha, lo.focal_gamma) if mcfg.class_head == "sigmoid" else None
    matcher = HungarianMatcher(lo.cost_class, lo.cost_bbox, lo.cost_giou, focal)
    return SetCriterion(num_classes, matcher, lo.weight_ce, lo.weight_bbox, lo.weight_giou, lo.eos_coef, focal)


def open_datasets(cfg: DetectConfig, mcfg: DetrConfig) -> tuple[DetectionDataset, DetectionDataset]:
    """The training set (train transform) and the validation set (eval transform, ``data.val_split``)."""
    max_size = cfg.data.max_size or mcfg.max_size
    train_tf = build_train_transform(mcfg.mean, mcfg.std, cfg.data.scales, max_size, cfg.data.hflip, cfg.data.crop,
                                     cfg.data.crop_prescales, tuple(cfg.data.crop_size))
    eval_tf = build_eval_transform(mcfg.mean, mcfg.std, mcfg.min_size, mcfg.max_size)
    train_ds = open_detection_source(cfg.data.train, "train", train_tf)
    val_ds = open_detection_source(cfg.data.val or cfg.data.train, cfg.data.val_split, eval_tf)
    if list(val_ds.classes) != list(train_ds.classes):
        raise DataError(f"validation classes differ from training classes ({len(val_ds.classes)} vs {len(train_ds.classes)})")
    return train_ds, val_ds


def build_optimizer(model: torch.nn.Module, lr: float, lr_backbone: float, weight_decay: float,
                    betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW over two groups (the paper): the backbone at ``lr_backbone``, the rest at ``lr``."""
    if lr_backbone == 0:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    body = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    groups = [{"params": head, "lr": lr}] + ([{"params": body, "lr": lr_backbone}] if body else [])
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=betas)


def build_schedule(optimizer: torch.optim.Optimizer, cfg: DetectConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step multiplier: warmup, then cosine to ``min_lr`` or the paper's x0.1 step at ``lr_drop_epoch``."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.optim.warmup_epochs * steps_per_epoch)
    if cfg.optim.schedule == "cosine":
        ratio = cfg.optim.min_lr / cfg.optim.lr
        fn = lambda s: warmup_cosine(s, total, warmup, ratio)  # noqa: E731
    else:
        drop = None if cfg.optim.lr_drop_epoch is None else cfg.optim.lr_drop_epoch * steps_per_epoch
        fn = lambda s: (min(1.0, (s + 1) / warmup) if s < warmup else 1.0) * (0.1 if drop is not None and s >= drop else 1.0)  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def _prepare(cfg: DetectConfig, info: distributed.DistInfo,
             say: Callable[[str], None]) -> tuple[torch.nn.Module, DetectionTask, torch.device, str]:
    """Model, task, device and precision; raises on bad input before anything is written."""
    device = resolve_device(cfg.device)
    resolve_precision(cfg.precision, device)  # a bad value fails here, before any data is opened
    mcfg = model_config(cfg)
    train_ds, val_ds = open_datasets(cfg, mcfg)
    seed_everything(cfg.seed)  # the initial weights are a function of the seed
    model = create_detr(cfg.model, **{**cfg.model_args, "num_classes": len(train_ds.classes)})
    max_size = cfg.data.max_size or mcfg.max_size
    if isinstance(model.backbone, ViTBackbone) and max_size > min(model.backbone.img_size):
        raise ConfigError(f"max_size {max_size} exceeds the ViT backbone's input {model.backbone.img_size}; "
                          "lower data.max_size / model_args.max_size")
    criterion = build_criterion(cfg, mcfg, len(train_ds.classes)).to(device)
    policy = ImagePolicy(None, cfg.data.strict, cfg.data.max_bad_samples)
    task = DetectionTask(SeededSamples(SubstitutingSamples(train_ds, policy), cfg.seed), val_ds, train_ds.classes, criterion,
                         cfg.data.eval_batch_size, cfg.data.workers, info, cfg.data.val_split)
    task.drop_last = cfg.data.drop_last
    # timed on a copy inside fork_rng (the weights stay as seeded), at the largest input a batch can have
    precision = resolve_train_precision(cfg.precision, device, model, (3, max_size, max_size), cfg.data.batch_size,
                                        info.world_size > 1, say)
    return model, task, device, precision


def train(cfg: DetectConfig, out: str | Path, resume: bool = False, overwrite: bool = False, progress: bool = True,
          echo: Callable[[str], None] = print, allow_changes: tuple[str, ...] = ()) -> DetectResult:
    """Run (or continue) a DETR training as configured."""
    info = distributed.from_environment()
    say = echo if info.is_main else (lambda s: None)
    run = RunDir(out)
    if resume and cfg.precision == "auto":
        cfg = dataclasses.replace(cfg, precision=saved_precision(run.config))  # the run's own choice, not a new timing
    model, task, device, precision = _prepare(cfg, info, say)
    cfg = dataclasses.replace(cfg, precision=precision)  # config.yaml records what auto chose
    if info.is_main:
        if resume:
            check_resume_config(run.config, cfg, DetectConfig, DETECT_RESUME_SAFE, allow_changes, say)
        run = claim_run_dir(out, overwrite=overwrite, resume=resume)
        skipped = {k: v for k, v in task.train_data.skipped.items() if v}
        if skipped:
            say("left out of training targets: " + ", ".join(f"{v} {k}" for k, v in skipped.items()))
    device = distributed.init(info, device)
    task.criterion.to(device)
    distributed.barrier(info)
    o = cfg.optim
    try:
        return fit(task, model, settings_from_config(cfg, precision),
                   lambda m: build_optimizer(m, o.lr, o.lr_backbone, o.weight_decay, o.betas),
                   lambda opt, steps: build_schedule(opt, cfg, steps), run, resume, device, info,
                   progress and info.is_main, say, lambda: save_detect_config(cfg, run.config))
    finally:
        distributed.shutdown(info)
