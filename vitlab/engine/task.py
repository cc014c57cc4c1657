"""The seam between the engine and the tasks: what a kind of training provides to the engine.

The engine defines this interface; ``vitlab/tasks/`` implements it (classification, detection).

The engine (:mod:`vitlab.engine.fit`) owns the loop, exact resume, checkpoints, signals,
torchrun, accumulation, clipping, EMA, the non-finite policy and logging. A :class:`Task` owns
only what differs between kinds of training: the training data and how it is batched, the loss
of one micro-batch, the evaluation and its metrics, and how an epoch is summarised.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from vitlab.engine.distributed import DistInfo


@dataclass
class StepOutput:
    """The result of one micro-batch forward.

    Attributes:
        loss: scalar float32 tensor to back-propagate (the mean over the micro-batch).
        images: samples in the micro-batch on this rank.
        sums: additive statistics of the micro-batch (e.g. ``correct``, ``loss_ce``); the engine
            sums them over the epoch (and over ranks) and hands them to :meth:`Task.summarize`.
        log: per-step values worth logging besides the loss (e.g. loss components).
    """

    loss: torch.Tensor
    images: int
    sums: dict[str, float] = field(default_factory=dict)
    log: dict[str, float] = field(default_factory=dict)


class Task(ABC):
    """A kind of training, plugged into :func:`vitlab.engine.fit.fit`.

    Attributes:
        class_names: stored with every checkpoint.
        train_data: the training dataset; indexed by the engine's resumable sampler. Its random
            augmentation must be seeded per sample (``set_epoch`` is called before each epoch).
        collate: the DataLoader's ``collate_fn`` (None: torch's default).
        drop_last: drop a last incomplete global batch of an epoch.
        find_unused_parameters: passed to DDP (models whose forward may skip parameters).
    """

    class_names: list[str]
    train_data: Dataset
    collate: Callable[[list[Any]], Any] | None = None
    drop_last: bool = True
    find_unused_parameters: bool = False

    @abstractmethod
    def step(self, model: nn.Module, batch: Any, device: torch.device, precision: str, sample_seed: int) -> StepOutput:
        """Forward one micro-batch and return its loss (train mode; no backward here).

        ``sample_seed`` is a deterministic seed for this micro-batch (batch-level augmentation such
        as Mixup must draw from a generator seeded with it, never from the global RNG).
        """

    @abstractmethod
    def summarize(self, sums: dict[str, float], images: int, micro_batches: int) -> dict[str, float]:
        """Epoch figures (``train_*``) from the summed :attr:`StepOutput.sums` of the whole epoch."""

    @abstractmethod
    def evaluate(self, model: nn.Module, device: torch.device, precision: str, info: DistInfo,
                 prefix: str) -> dict[str, float]:
        """Validation metrics, keys starting with ``prefix`` (``val_`` or ``ema_val_``); the same on every rank."""

    @abstractmethod
    def epoch_line(self, record: dict[str, Any]) -> str:
        """The one-line progress summary of a finished epoch record."""

    def describe(self) -> str:
        """Data summary for the start-of-run line, e.g. '60000 images, 10 classes; validating on 10000'."""
        return f"{len(self.train_data)} images, {len(self.class_names)} classes"  # type: ignore[arg-type]

    def data_fingerprint(self) -> dict[str, Any]:
        """What identifies the training data, saved with every checkpoint and compared on resume.

        Plain values only (``torch.load(weights_only=True)`` reads them back). The default is the
        number of samples and the class names in label order; tasks add a cheap digest of their
        sample list (file names and sizes, image ids) under keys of their own.
        """
        return {"samples": len(self.train_data), "classes": list(self.class_names)}  # type: ignore[arg-type]

    def checkpoint_info(self) -> dict[str, Any]:
        """How this task evaluates, recorded in every checkpoint's ``info`` so a later evaluation of
        the file can do the same (classification: its test-time augmentation). Plain JSON values."""
        return {}

    def is_better(self, metric: str, value: float, best: float) -> bool:
        """Whether ``value`` of ``metric`` improves on ``best`` (losses and calibration errors go down)."""
        return value < best if minimises(metric) else value > best


def minimises(metric: str) -> bool:
    """True for metrics where lower is better (``*loss``, ``*ece``)."""
    return metric.endswith("loss") or metric.endswith("ece")


def fingerprint_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two :meth:`Task.data_fingerprint` values, one phrase each (empty: the same).

    Keys present on one side only are ignored (a fingerprint from an older vitlab has fewer).
    Nested dicts (e.g. per-class counts) are compared entry by entry, naming each entry.
    """
    changes: list[str] = []
    for key in (k for k in now if k in saved and saved[k] != now[k]):
        old, new = saved[key], now[key]
        if key == "classes":
            changes.append(_class_change(list(old), list(new)))
        elif isinstance(old, dict) and isinstance(new, dict):
            names = [n for n in sorted(set(old) | set(new), key=str) if old.get(n) != new.get(n)]
            # a digest says only "changed"; a count says by how much
            parts = names if "digest" in key else [f"{n} {old.get(n, 'absent')} -> {new.get(n, 'absent')}"
                                                   for n in names]
            changes.append(f"{key}: " + ", ".join(parts[:5]) + (f" (+{len(parts) - 5} more)" if len(parts) > 5 else ""))
        else:
            changes.append(f"{key} changed" if "digest" in key else f"{key} {old} -> {new}")
    return changes


def _class_change(old: list[str], new: list[str]) -> str:
    gone, added = [c for c in old if c not in new], [c for c in new if c not in old]
    if gone or added:
        parts = [f"{what} {', '.join(names)}" for what, names in (("missing", gone), ("new", added)) if names]
        return "classes: " + "; ".join(parts)
    return f"class order {old} -> {new}"
