"""The engine's own settings: explicit values, never the whole run config (DESIGN rule 5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class EngineSettings:
    """How the engine trains, whatever the task.

    Attributes:
        epochs, seed: length of the run and the seed of every random stream.
        batch_size: micro-batch per process; the global batch is ``batch_size * world_size``.
        workers: data-loader worker processes.
        accum_steps: micro-batches per optimizer step.
        clip_grad: max global gradient norm, or None (the raw norm is still logged).
        nonfinite: ``stop`` raises at the first non-finite loss / gradient norm; ``skip`` drops
            that update and goes on, up to ``max_bad_steps`` in a row (None: no limit) and up to
            ``max_skipped_fraction`` of an epoch's steps (skipping every step is a failure).
        log_every: a train record every N optimizer steps.
        eval_every: validate every N epochs (and after the last).
        max_steps_per_epoch: cap for smoke runs.
        checkpoint_every: a resumable checkpoint every N steps, besides every epoch end.
        keep: resumable checkpoints kept.
        best_metric: the validation metric that chooses ``best.safetensors``.
        ema_decay, ema_warmup: exponential moving average of the weights (None: off).
        ema_validate_raw: validate the trained weights too, not only the EMA's.
        precision: fp32, bf16 or fp16 (resolved already).
        compile: torch.compile the model.
        fsdp: shard parameters with FSDP2 under torchrun (else DDP).
        sync_bn: BatchNorm statistics over all processes; None: on when world size > 1.
        tensorboard: event files in RUN/tb.
    """

    epochs: int
    seed: int
    batch_size: int
    workers: int = 0
    accum_steps: int = 1
    clip_grad: float | None = None
    nonfinite: Literal["stop", "skip"] = "stop"
    max_bad_steps: int | None = None
    max_skipped_fraction: float = 1.0
    log_every: int = 20
    eval_every: int = 1
    max_steps_per_epoch: int | None = None
    checkpoint_every: int | None = None
    keep: int = 2
    best_metric: str = "val_top1"
    ema_decay: float | None = None
    ema_warmup: bool = True
    ema_validate_raw: bool = True
    precision: str = "fp32"
    compile: bool = False
    fsdp: bool = False
    sync_bn: bool | None = None
    tensorboard: bool = True


def settings_from_config(cfg: Any, precision: str) -> EngineSettings:
    """The engine's part of a run config (``TrainConfig`` or ``DetectConfig``: both name these fields
    alike), read here once so the engine itself only ever sees explicit values."""
    return EngineSettings(
        epochs=cfg.epochs, seed=cfg.seed, batch_size=cfg.data.batch_size, workers=cfg.data.workers,
        accum_steps=cfg.optim.accum_steps, clip_grad=cfg.optim.clip_grad, nonfinite=cfg.nonfinite,
        max_bad_steps=cfg.max_bad_steps, max_skipped_fraction=cfg.max_skipped_fraction, log_every=cfg.log_every, eval_every=cfg.eval_every,
        max_steps_per_epoch=cfg.max_steps_per_epoch, checkpoint_every=cfg.checkpoint.every_steps,
        keep=cfg.checkpoint.keep, best_metric=cfg.checkpoint.best_metric, ema_decay=cfg.ema.decay,
        ema_warmup=cfg.ema.warmup, ema_validate_raw=cfg.ema.validate_raw, precision=precision, compile=cfg.compile, fsdp=cfg.fsdp, sync_bn=cfg.sync_bn,
        tensorboard=cfg.tensorboard)
