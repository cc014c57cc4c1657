"""Orchestration of a DETR run: config -> model, data, optimizer -> epochs -> checkpoints, mAP.

The one place that reads a whole :class:`DetectConfig`; the engine, data and model take explicit
arguments. Inputs are validated before the run folder is created. The run folder, checkpoint
format and resume rules are the classification engine's (vitlab.engine.rundir / checkpoint /
resume: a ``step-N`` pair at every epoch end, the newest two kept, ``last.safetensors`` refreshed);
``best`` is the checkpoint with the highest validation AP. Resuming continues at the next epoch.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from vitlab.detection.base import DetectionDataset
from vitlab.detection.coco_eval import coco_map
from vitlab.detection.collate import collate_detection
from vitlab.detection.config import DetectConfig, save_detect_config
from vitlab.detection.engine import evaluate, train_one_epoch
from vitlab.detection.sources import open_detection_source
from vitlab.detection.transforms import build_eval_transform, build_train_transform
from vitlab.engine.checkpoint import load_state_checked, save_weights
from vitlab.engine.optim import warmup_cosine
from vitlab.engine.resume import find_resumable, save_resumable
from vitlab.engine.rundir import RunDir, claim_run_dir
from vitlab.errors import CheckpointError, ConfigError, DataError
from vitlab.models.detr import PRESETS, DetrConfig, SetCriterion, HungarianMatcher, create_detr
from vitlab.models.detr.backbone import ViTBackbone
from vitlab.utils.device import resolve_device, resolve_precision


@dataclass
class DetectResult:
    run_dir: Path
    best_ap: float
    best_epoch: int
    last_metrics: dict[str, Any]
    seconds: float


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_config(cfg: DetectConfig) -> DetrConfig:
    """The DetrConfig a run will build (validates the preset name and options)."""
    if cfg.model not in PRESETS:
        raise ConfigError(f"unknown DETR model {cfg.model!r}; known: {', '.join(sorted(PRESETS))}")
    return DetrConfig().replace(**PRESETS[cfg.model]).replace(**cfg.model_args)


def open_datasets(cfg: DetectConfig, mcfg: DetrConfig, val_split: str = "val") -> tuple[DetectionDataset, DetectionDataset]:
    max_size = cfg.data.max_size or mcfg.max_size
    train_tf = build_train_transform(mcfg.mean, mcfg.std, cfg.data.scales, max_size, cfg.data.hflip, cfg.data.crop,
                                     cfg.data.crop_prescales, tuple(cfg.data.crop_size))
    eval_tf = build_eval_transform(mcfg.mean, mcfg.std, mcfg.min_size, mcfg.max_size)
    train_ds = open_detection_source(cfg.data.train, "train", train_tf)
    val_ds = open_detection_source(cfg.data.val or cfg.data.train, val_split, eval_tf)
    if list(val_ds.classes) != list(train_ds.classes):
        raise DataError(f"validation classes differ from training classes ({len(val_ds.classes)} vs {len(train_ds.classes)})")
    return train_ds, val_ds


def _loader(ds, batch_size: int, workers: int, shuffle_seed: int | None) -> DataLoader:
    sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(shuffle_seed)) if shuffle_seed is not None else None
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_detection,
                      persistent_workers=False)


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
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.optim.warmup_epochs * steps_per_epoch)
    if cfg.optim.schedule == "cosine":
        ratio = cfg.optim.min_lr / cfg.optim.lr
        fn = lambda s: warmup_cosine(s, total, warmup, ratio)  # noqa: E731
    else:
        drop = None if cfg.optim.lr_drop_epoch is None else cfg.optim.lr_drop_epoch * steps_per_epoch
        fn = lambda s: (min(1.0, (s + 1) / warmup) if s < warmup else 1.0) * (0.1 if drop is not None and s >= drop else 1.0)  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def train(cfg: DetectConfig, out: str | Path, resume: bool = False, overwrite: bool = False, progress: bool = True,
          echo: Callable[[str], None] = print, val_split: str = "val") -> DetectResult:
    """Run (or continue) a DETR training as configured."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    mcfg = model_config(cfg)
    train_ds, val_ds = open_datasets(cfg, mcfg, val_split)
    _seed_everything(cfg.seed)
    model = create_detr(cfg.model, **{**cfg.model_args, "num_classes": len(train_ds.classes)})
    if isinstance(model.backbone, ViTBackbone) and (cfg.data.max_size or mcfg.max_size) > min(model.backbone.img_size):
        raise ConfigError(f"max_size {cfg.data.max_size or mcfg.max_size} exceeds the ViT backbone's input "
                          f"{model.backbone.img_size}; lower data.max_size / model_args.max_size")
    model.to(device)
    run = claim_run_dir(out, overwrite=overwrite, resume=resume)
    matcher = HungarianMatcher(cfg.loss.cost_class, cfg.loss.cost_bbox, cfg.loss.cost_giou)
    criterion = SetCriterion(len(train_ds.classes), matcher, cfg.loss.weight_ce, cfg.loss.weight_bbox,
                             cfg.loss.weight_giou, cfg.loss.eos_coef).to(device)
    steps_per_epoch = math.ceil(len(train_ds) / cfg.data.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    optimizer = build_optimizer(model, cfg.optim.lr, cfg.optim.lr_backbone, cfg.optim.weight_decay, cfg.optim.betas)
    scheduler = build_schedule(optimizer, cfg, steps_per_epoch)
    start_epoch, best_ap, best_epoch, global_step = 0, -1.0, -1, 0
    if resume:
        start_epoch, best_ap, best_epoch, global_step = _restore(run, model, optimizer, scheduler)
        echo(f"resuming {run.root} at epoch {start_epoch}")
    save_detect_config(cfg, run.config)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    echo(f"training {cfg.model} ({n_train:,} trainable parameters) on {len(train_ds)} images, "
         f"{len(train_ds.classes)} classes; validating on {len(val_ds)} ({val_split}); device {device}, {precision}")
    skipped = {k: v for k, v in train_ds.skipped.items() if v}
    if skipped:
        echo("left out of training targets: " + ", ".join(f"{v} {k}" for k, v in skipped.items()))
    val_loader = _loader(val_ds, cfg.data.eval_batch_size, cfg.data.workers, None)
    gt = val_ds.coco_ground_truth()
    t_start = time.perf_counter()
    last: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        _seed_everything(cfg.seed * 100003 + epoch)
        loader = _loader(train_ds, cfg.data.batch_size, cfg.data.workers, cfg.seed * 100003 + epoch)
        stats = train_one_epoch(model, criterion, loader, optimizer, scheduler, device, precision, epoch, global_step,
                                cfg.optim.clip_grad, cfg.max_steps_per_epoch, cfg.log_every, run.log, progress,
                                cfg.max_bad_steps)
        global_step += stats["steps"] + stats["skipped_steps"]
        record: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": global_step, **stats,
                                  "lr": optimizer.param_groups[0]["lr"]}
        if (epoch + 1) % cfg.eval_every == 0 or epoch == cfg.epochs - 1:
            last = evaluate_detection(model, criterion, val_loader, gt, device, precision, progress)
            record.update(last)
            if last["val_AP"] > best_ap:
                best_ap, best_epoch = last["val_AP"], epoch
                save_weights(run.weights("best"), model, train_ds.classes, {"epoch": epoch, "step": global_step, **last})
        run.log(record)
        save_resumable(run, global_step, model, train_ds.classes, {"epoch": epoch, **last}, {
            "epoch": epoch, "best_ap": best_ap, "best_epoch": best_epoch,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        }, keep=2)
        val = f", val AP {last['val_AP']:.1f} AP50 {last['val_AP50']:.1f}" if "val_AP" in record else ""
        bad = f", {stats['skipped_steps']} skipped steps" if stats["skipped_steps"] else ""
        echo(f"epoch {epoch + 1}/{cfg.epochs}: loss {stats['train_loss']:.3f} (ce {stats['train_loss_ce']:.3f}, "
             f"l1 {stats['train_loss_bbox']:.3f}, giou {stats['train_loss_giou']:.3f}), "
             f"{stats['images'] / max(stats['seconds'], 1e-9):.1f} img/s{bad}{val}")
    return DetectResult(run.root, best_ap, best_epoch, last, time.perf_counter() - t_start)


def evaluate_detection(model, criterion, loader, gt: dict, device, precision, progress: bool = False) -> dict[str, Any]:
    """Validation losses and COCO statistics, keys prefixed ``val_``."""
    stats, results = evaluate(model, criterion, loader, device, precision, progress)
    return {**stats, **{f"val_{k}": v for k, v in coco_map(gt, results).items()}}


def _restore(run: RunDir, model, optimizer, scheduler) -> tuple[int, float, int, int]:
    """Load the newest valid checkpoint pair; returns (next epoch, best AP, best epoch, step)."""
    found = find_resumable(run)
    if found is None:
        raise CheckpointError(f"{run.checkpoints}: no readable checkpoint to resume from")
    load_state_checked(model, found.weights, str(found.weights_path))
    state = found.state
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return int(state["epoch"]) + 1, float(state["best_ap"]), int(state["best_epoch"]), int(state["step"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{found.weights_path}: state does not match this DETR run ({err})") from None
