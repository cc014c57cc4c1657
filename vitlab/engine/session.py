"""The live objects of one fit, shared by the engine's modules (fit, restore)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vitlab.engine import distributed
from vitlab.engine.ema import ModelEma
from vitlab.engine.rundir import RunDir
from vitlab.engine.settings import EngineSettings
from vitlab.engine.tracking import TensorBoard
from vitlab.engine.task import Task


@dataclass
class Session:
    """The live objects of one fit."""

    task: Task
    model: nn.Module
    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    ema: ModelEma | None
    s: EngineSettings
    run: RunDir
    info: distributed.DistInfo
    device: torch.device
    steps_per_epoch: int
    echo: Callable[[str], None]
    progress: bool = False
    tb: TensorBoard | None = None
