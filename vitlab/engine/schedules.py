"""Learning-rate schedules as pure functions of the optimizer step: a linear warmup, then one decay rule.

Each rule returns the multiplier of the peak rate (``optim.lr``) at step ``s`` (0-based: the rate
optimizer step ``s`` trains with). Being a function of the step alone, the rate after a resume is
the rate the uninterrupted run had (the scheduler's whole state is its step counter).

How they relate to timm (``timm.scheduler``, stepped per update, ``t_in_epochs=False``):

* ``cosine``, ``linear``, ``poly``: decay over the steps *after* the warmup to ``min_ratio``, as
  timm's ``CosineLRScheduler`` / ``PolyLRScheduler`` with ``warmup_prefix=True`` and ``t_initial =
  total - warmup`` (timm's train.py default, ``warmup_prefix=False``, starts the decay at step 0,
  under the warmup). ``linear`` is ``poly`` with power 1.
* ``step``, ``multistep``: epochs counted from the start of the run, as timm's train.py
  (``warmup_prefix=False``): ``step`` multiplies by ``decay_rate`` every ``decay_steps``, as
  ``StepLRScheduler``; ``multistep`` at each milestone step ``m`` (from step ``m`` on, as
  ``torch.optim.lr_scheduler.MultiStepLR``; timm's ``MultiStepLRScheduler`` keeps a historical
  convention that applies it one step earlier, at ``m - 1``). Both floor at ``min_ratio``
  (timm's never floor; ``min_ratio=0`` gives timm's values).
* ``constant``: 1 after the warmup.

Warmup: ``warmup_ratio`` None is vitlab's ramp ``(s + 1) / W`` (the first step trains at lr / W,
none at 0); a number is timm's ``warmup_lr_init`` rule ``r + s (1 - r) / W``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Literal

import torch

ScheduleName = Literal["cosine", "linear", "poly", "step", "multistep", "constant"]
SCHEDULES: tuple[str, ...] = ("cosine", "linear", "poly", "step", "multistep", "constant")


def warmup(step: int, warmup_steps: int, warmup_ratio: float | None = None) -> float:
    """Multiplier during the linear warmup (``step < warmup_steps``)."""
    if warmup_ratio is None:
        return (step + 1) / warmup_steps
    return warmup_ratio + step * (1.0 - warmup_ratio) / warmup_steps


def cosine(progress: float, min_ratio: float = 0.0) -> float:
    """Half a cosine from 1 at ``progress`` 0 to ``min_ratio`` at 1 (clamped beyond)."""
    p = min(max(progress, 0.0), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def poly(progress: float, min_ratio: float = 0.0, power: float = 1.0) -> float:
    """``min_ratio + (1 - min_ratio) (1 - progress) ** power`` (power 1: linear), clamped beyond 1."""
    p = min(max(progress, 0.0), 1.0)
    return min_ratio + (1.0 - min_ratio) * (1.0 - p) ** power


def step_decay(step: int, decay_steps: int, decay_rate: float) -> float:
    """``decay_rate ** (step // decay_steps)``: one decay every ``decay_steps`` steps."""
    return decay_rate ** (step // decay_steps)


def multistep_decay(step: int, milestones: tuple[int, ...], decay_rate: float) -> float:
    """``decay_rate`` to the number of (sorted) ``milestones`` at or before ``step``."""
    return decay_rate ** bisect.bisect_right(milestones, step)


@dataclass(frozen=True)
class Schedule:
    """One run's schedule in steps; ``schedule(step)`` is the multiplier of the peak lr at ``step``.

    ``total_steps`` is the whole run including the warmup; ``decay_steps`` (step) and
    ``milestones`` (multistep) count from step 0; ``min_ratio`` = min_lr / lr.
    """

    name: ScheduleName
    total_steps: int
    warmup_steps: int = 0
    min_ratio: float = 0.0
    warmup_ratio: float | None = None
    decay_steps: int = 1
    decay_rate: float = 0.1
    milestones: tuple[int, ...] = ()
    power: float = 1.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return warmup(step, self.warmup_steps, self.warmup_ratio)
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        if self.name == "cosine":
            return cosine(progress, self.min_ratio)
        if self.name in ("linear", "poly"):
            return poly(progress, self.min_ratio, 1.0 if self.name == "linear" else self.power)
        if self.name == "step":
            return max(self.min_ratio, step_decay(step, self.decay_steps, self.decay_rate))
        if self.name == "multistep":
            return max(self.min_ratio, multistep_decay(step, self.milestones, self.decay_rate))
        if self.name == "constant":
            return 1.0
        raise ValueError(f"unknown schedule {self.name!r}; expected one of {', '.join(SCHEDULES)}")

    def unreached(self) -> str | None:
        """A line when the decay never happens within the run (a step / milestone past the last step)."""
        late = [m for m in self.milestones if m >= self.total_steps] if self.name == "multistep" else []
        if self.name == "step" and self.decay_steps >= self.total_steps:
            late = [self.decay_steps]
        if not late:
            return None
        return (f"optim.schedule={self.name}: the decay at step(s) {', '.join(map(str, late))} lies past the run's "
                f"{self.total_steps} steps, so it never applies")


def lambda_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR: ``schedule(step)`` times each group's ``lr_scale`` (layer-wise decay).

    Plain lambdas (not callable objects), so the scheduler's state dict holds only the step
    counter and a resume rebuilds the rule from the current config.
    """
    scales = [g.get("lr_scale", 1.0) for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda step, s=s: s * schedule(step) for s in scales])
