"""Typed, layered config of a DETR run: dataclass defaults -> YAML recipe -> command-line overrides.

Uses the same machinery as the classification config (unknown keys are errors naming the key);
the resolved config is written into the run folder and read back by ``--resume``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


from vitlab.config import EmaSettings, resolve_layered, save_config
from vitlab.errors import ConfigError


@dataclass
class DetectDataSettings:
    """Sources, augmentation and batching."""

    train: str = "shapes"  # "shapes[:N[:SIZE]]" or a COCO-layout folder
    val: str | None = None  # None: the same source's val split
    val_split: Literal["val", "train"] = "val"  # split of the validation source ("train": how well it is fit)
    batch_size: int = 2
    eval_batch_size: int = 2
    workers: int = 0
    scales: list[int] = field(default_factory=lambda: list(range(480, 801, 32)))  # shorter side, training
    max_size: int | None = None  # cap on the longer side (None: the model's max_size)
    hflip: float = 0.5
    crop: bool = True  # the paper's resize-crop-resize branch, half of the time
    crop_prescales: list[int] = field(default_factory=lambda: [400, 500, 600])
    crop_size: tuple[int, int] = (384, 600)
    drop_last: bool = True  # as DETR's own code: every process then sees equal batches
    strict: bool = False  # stop at the first training image that cannot be decoded (else substitute, counted)
    max_bad_samples: int = 100  # distinct undecodable training images tolerated before the run stops


@dataclass
class DetectOptimSettings:
    """AdamW with a lower backbone learning rate; cosine or step schedule (the paper: step)."""

    lr: float = 1e-4
    lr_backbone: float = 1e-5
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["step", "cosine"] = "step"
    lr_drop_epoch: int | None = None  # step schedule: multiply by 0.1 from this epoch (None: never)
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    clip_grad: float | None = 0.1
    accum_steps: int = 1  # micro-batches per optimizer step


@dataclass
class LossSettings:
    """Matching costs and loss weights (paper: 1, 5, 2 for both) and the no-object weight."""

    cost_class: float = 1.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    weight_ce: float = 1.0
    weight_bbox: float = 5.0
    weight_giou: float = 2.0
    eos_coef: float = 0.1
    # The focal loss and cost of a sigmoid class head (model_args.class_head: sigmoid; Deformable DETR)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


@dataclass
class DetectCheckpointSettings:
    """When checkpoints are written and which one is "best" (highest val_AP by default)."""

    every_steps: int | None = None  # also at every epoch end
    keep: int = 2
    best_metric: str = "val_AP"  # or val_AP50, val_loss, ema_val_AP, ...; *loss is minimised


@dataclass
class DetectConfig:
    """A whole detection run."""

    model: str = "detr_resnet50"
    model_args: dict[str, Any] = field(default_factory=dict)
    data: DetectDataSettings = field(default_factory=DetectDataSettings)
    optim: DetectOptimSettings = field(default_factory=DetectOptimSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    ema: EmaSettings = field(default_factory=EmaSettings)
    checkpoint: DetectCheckpointSettings = field(default_factory=DetectCheckpointSettings)
    epochs: int = 300
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"
    eval_every: int = 1
    log_every: int = 20
    max_steps_per_epoch: int | None = None
    nonfinite: Literal["stop", "skip"] = "skip"  # a non-finite loss / gradient: drop the update, or stop
    max_bad_steps: int | None = 5  # with skip: this many non-finite steps in a row stop the run
    max_skipped_fraction: float = 0.5  # with skip: an epoch skipping more of its steps stops the run
    compile: bool = False
    fsdp: bool = False
    sync_bn: bool | None = None  # BatchNorm over all processes under torchrun; null: on when >1 process
    tensorboard: bool = True
    smoke: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs", self.epochs, "must be at least 1"),
            (self.data.batch_size >= 1, "data.batch_size", self.data.batch_size, "must be at least 1"),
            (self.data.eval_batch_size >= 1, "data.eval_batch_size", self.data.eval_batch_size, "must be at least 1"),
            (bool(self.data.scales) and min(self.data.scales) >= 1, "data.scales", self.data.scales, "need positive sizes"),
            (0 <= self.data.hflip <= 1, "data.hflip", self.data.hflip, "must be in [0, 1]"),
            (math.isfinite(self.optim.lr) and self.optim.lr > 0, "optim.lr", self.optim.lr, "must be positive"),
            (self.optim.lr_backbone >= 0, "optim.lr_backbone", self.optim.lr_backbone, "must be >= 0"),
            (self.optim.clip_grad is None or self.optim.clip_grad > 0, "optim.clip_grad", self.optim.clip_grad,
             "must be > 0 or null"),
            (self.loss.eos_coef > 0, "loss.eos_coef", self.loss.eos_coef, "must be > 0"),
            (0 < self.loss.focal_alpha < 1, "loss.focal_alpha", self.loss.focal_alpha, "must be in (0, 1)"),
            (self.loss.focal_gamma >= 0, "loss.focal_gamma", self.loss.focal_gamma, "must be >= 0"),
            (self.eval_every >= 1, "eval_every", self.eval_every, "must be at least 1"),
            (self.log_every >= 1, "log_every", self.log_every, "must be at least 1"),
            (self.max_bad_steps is None or self.max_bad_steps >= 1, "max_bad_steps", self.max_bad_steps,
             "must be at least 1 or null"),
            (0 < self.max_skipped_fraction <= 1, "max_skipped_fraction", self.max_skipped_fraction, "must be in (0, 1]"),
            (self.optim.accum_steps >= 1, "optim.accum_steps", self.optim.accum_steps, "must be at least 1"),
            (self.ema.decay is None or 0 < self.ema.decay < 1, "ema.decay", self.ema.decay, "must be in (0, 1) or null"),
            (self.checkpoint.every_steps is None or self.checkpoint.every_steps >= 1, "checkpoint.every_steps",
             self.checkpoint.every_steps, "must be at least 1 or null"),
            (self.checkpoint.keep >= 1, "checkpoint.keep", self.checkpoint.keep, "must be at least 1"),
            (self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1, "max_steps_per_epoch",
             self.max_steps_per_epoch, "must be at least 1 or null"),
        ]
        for ok, name, value, why in checks:
            if not ok:
                raise ConfigError(f"{name}={value}: {why}")
        metric = self.checkpoint.best_metric
        if not metric.startswith(("val_", "ema_val_")):
            raise ConfigError(f"checkpoint.best_metric={metric!r}: expected a validation metric such as val_AP, "
                              "val_AP50, val_loss or the same with an ema_ prefix")
        if metric.startswith("ema_") and self.ema.decay is None:
            raise ConfigError(f"checkpoint.best_metric={metric!r} needs ema.decay to be set")


def resolve_detect_config(file: str | Path | None = None, overrides: list[dict[str, Any]] | None = None,
                          smoke: bool = False) -> DetectConfig:
    """Defaults, then ``file``, then each override in order; ``smoke`` applies the recipe's smoke block."""
    return resolve_layered(DetectConfig, file, overrides, smoke, {"epochs": 1, "max_steps_per_epoch": 3})


def save_detect_config(cfg: DetectConfig, path: str | Path) -> None:
    save_config(cfg, path)


# Fields that may change when a detection run is resumed: they do not alter what is computed.
DETECT_RESUME_SAFE = {"device", "data.workers", "data.eval_batch_size", "eval_every", "log_every", "checkpoint.keep",
                      "checkpoint.every_steps", "tensorboard", "smoke", "compile"}
