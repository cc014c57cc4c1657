"""Image classification as a :class:`~vitlab.engine.task.Task`: cross-entropy (or soft-target
cross-entropy under Mixup / CutMix), top-1 during training, top-1 / top-5 / loss / ECE on validation."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from vitlab.data.fingerprint import folder_fingerprint
from vitlab.data.splits import SplitView
from vitlab.data.folder import ImageFolderDataset
from vitlab.data.bad_samples import collate_counting
from vitlab.data.mixup import MixupCutmix
from vitlab.engine.distributed import DistInfo, all_reduce_sum_tensor
from vitlab.evaluation.inference import evaluate
from vitlab.evaluation.tta import check_tta
from vitlab.evaluation.metrics import ClassificationMeter
from vitlab.engine.task import StepOutput, Task
from vitlab.utils.device import autocast


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Mean cross-entropy in float32; ``targets`` (B,) class indices or (B, C) soft targets."""
    if targets.ndim == 2:  # soft targets from Mixup / CutMix (smoothing already applied)
        return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


class ClassificationTask(Task):
    """Classification of ``(image (B, C, H, W), label (B,))`` batches.

    Args:
        train_data: yields (image tensor, label); per-sample seeded augmentation.
        val_data: yields (image tensor, label) with the eval transform.
        class_names: class names in label order.
        label_smoothing: smoothing of the hard-target loss.
        mixup: Mixup / CutMix on training batches, or None.
        eval_batch_size, workers: the validation loader's.
        max_eval_images: evaluate on the first N validation images only (smoke runs).
        tta: test-time augmentation of every evaluation (:mod:`vitlab.evaluation.tta`), "none" or "hflip".
    """

    def __init__(self, train_data: Dataset, val_data: Dataset, class_names: list[str], label_smoothing: float = 0.0,
                 mixup: MixupCutmix | None = None, eval_batch_size: int = 512, workers: int = 0,
                 max_eval_images: int | None = None, drop_last: bool = True, tta: str = "none") -> None:
        self.train_data, self.val_data, self.class_names = train_data, val_data, list(class_names)
        self.label_smoothing, self.mixup = label_smoothing, mixup
        self.eval_batch_size, self.workers, self.max_eval_images = eval_batch_size, workers, max_eval_images
        self.drop_last, self.tta = drop_last, check_tta(tta, "tta")
        # Counts the samples standing in for unreadable files (vitlab.data.bad_samples) per batch.
        self.collate = collate_counting

    def step(self, model: nn.Module, batch: Any, device: torch.device, precision: str, sample_seed: int) -> StepOutput:
        images, targets = batch[0], batch[1]
        bad = float(batch[2]) if len(batch) > 2 else 0.0  # (images, targets, substituted) from collate_counting
        images = images.to(device, non_blocking=True)
        hard = targets.to(device, non_blocking=True)
        soft = hard
        if self.mixup is not None:
            images, soft = self.mixup(images, hard, torch.Generator().manual_seed(sample_seed))
        with autocast(device, precision):
            logits = model(images)
        loss = classification_loss(logits, soft, self.label_smoothing)
        correct = float((logits.detach().argmax(1) == hard).sum())
        # bad_samples always present: the engine all-reduces the sums by key, the same keys on every rank.
        return StepOutput(loss=loss, images=int(hard.shape[0]), sums={"correct": correct, "bad_samples": bad})

    def summarize(self, sums: dict[str, float], images: int, micro_batches: int) -> dict[str, float]:
        return {"train_top1": 100.0 * sums.get("correct", 0.0) / max(images, 1),
                "bad_samples": int(sums.get("bad_samples", 0.0))}

    def evaluate(self, model: nn.Module, device: torch.device, precision: str, info: DistInfo,
                 prefix: str) -> dict[str, float]:
        """This rank's share of the validation set, counts reduced over ranks."""
        total = min(len(self.val_data), self.max_eval_images or len(self.val_data))  # type: ignore[arg-type]
        indices = list(range(info.rank, total, info.world_size))
        loader = DataLoader(Subset(self.val_data, indices), batch_size=self.eval_batch_size, num_workers=self.workers)
        meter = evaluate(model, loader, device, precision, len(self.class_names), tta=self.tta)
        if hasattr(model, "reshard"):  # FSDP2 keeps parameters unsharded after a no-grad forward
            model.reshard()
        if info.enabled:
            t = all_reduce_sum_tensor(meter.to_tensor().to(device), info).cpu()
            meter = ClassificationMeter(len(self.class_names))
            meter.from_tensor(t)
        return {f"{prefix}{k}": v for k, v in meter.result().items()}

    def checkpoint_info(self) -> dict[str, Any]:
        return {"tta": self.tta}  # vitlab eval / predict default to it: the run's own figures reproduce

    def data_fingerprint(self) -> dict[str, Any]:
        """Samples and classes, plus per class: image count and a digest of relative paths + sizes
        (folders; shard, key and size for tar shards; row and size for HF datasets), or the label
        counts (in-memory and torchvision sets, with the set's name).

        Computed once per process (one ``stat`` per file) and reused by every checkpoint.
        """
        if getattr(self, "_fingerprint", None) is None:
            raw = getattr(self.train_data, "dataset", self.train_data)  # under the SeededTransform
            out = super().data_fingerprint()
            if isinstance(raw, SplitView) and isinstance(raw.base, ImageFolderDataset):  # a carved train split
                samples = [raw.base.samples[i] for i in raw.indices]
                out.update(folder_fingerprint(raw.base.root, raw.base.classes, samples))
            elif isinstance(raw, ImageFolderDataset):
                out.update(folder_fingerprint(raw.root, raw.classes, raw.samples))
            elif hasattr(getattr(raw, "base", raw), "sample_fingerprint"):  # tar shards, HF datasets (carved or not)
                base = getattr(raw, "base", raw)
                out.update(base.sample_fingerprint(raw.indices if isinstance(raw, SplitView) else None))
            elif getattr(raw, "targets", None) is not None:
                counts = torch.bincount(torch.as_tensor(raw.targets), minlength=len(self.class_names)).tolist()
                out["images_per_class"] = dict(zip(self.class_names, counts))
            if getattr(raw, "name", None):
                out["source"] = str(raw.name)
            self._fingerprint = out
        return self._fingerprint

    def describe(self) -> str:
        return (f"{len(self.train_data)} images, {len(self.class_names)} classes; "  # type: ignore[arg-type]
                f"validating on {len(self.val_data)}")  # type: ignore[arg-type]

    def epoch_line(self, record: dict[str, Any]) -> str:
        val = "".join(f", {k} {v:.2f}" for k, v in record.items() if k.endswith("val_top1"))
        return (f"train loss {record['train_loss']:.4f}, "
                f"{record['images'] / max(record['seconds'], 1e-9):.0f} img/s{val}")
