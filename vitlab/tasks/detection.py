"""Detection as set prediction (DETR) as a :class:`~vitlab.engine.task.Task`: Hungarian-matched
CE + L1 + GIoU on ``(images, mask, targets)`` batches; COCO box AP on validation."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vitlab.detection.coco_eval import coco_map
from vitlab.detection.collate import collate_detection
from vitlab.detection.evaluate import evaluate, to_device
from vitlab.engine.distributed import DistInfo, all_reduce_sum_tensor
from vitlab.models.detr.criterion import SetCriterion
from vitlab.engine.task import StepOutput, Task
from vitlab.utils.device import autocast

_COMPONENTS = ("loss_ce", "loss_bbox", "loss_giou", "cardinality_error", "class_error")


class DetectionTask(Task):
    """DETR training on a detection dataset.

    Args:
        train_data: yields (image (3, H, W), target) with the (per-sample seeded) train transform.
        val_data: a :class:`~vitlab.detection.base.DetectionDataset` with the eval transform.
        class_names: object classes in label order.
        criterion: the set loss (its matcher and weights).
        eval_batch_size, workers: the validation loader's.
        info: where this process stands (the loss is normalised over the global batch).
    """

    collate = staticmethod(collate_detection)
    find_unused_parameters = True  # a frozen or partly used backbone leaves parameters without gradients

    def __init__(self, train_data: Dataset, val_data: Any, class_names: list[str], criterion: SetCriterion,
                 eval_batch_size: int = 2, workers: int = 0, info: DistInfo = DistInfo(), val_split: str = "val") -> None:
        self.train_data, self.val_data, self.class_names = train_data, val_data, list(class_names)
        self.criterion, self.eval_batch_size, self.workers, self.info = criterion, eval_batch_size, workers, info
        self.val_split = val_split
        self._gt = val_data.coco_ground_truth()

    def _global_counts(self, targets: list[dict], queries: int, device: torch.device) -> tuple[float, float, int] | None:
        if not self.info.enabled:
            return None
        local = torch.tensor([sum(len(t["labels"]) for t in targets), sum(min(len(t["labels"]), queries) for t in targets),
                              len(targets)], dtype=torch.float64, device=device)
        boxes, matched, images = all_reduce_sum_tensor(local, self.info).tolist()
        return boxes, matched, int(images)

    def step(self, model: nn.Module, batch: Any, device: torch.device, precision: str, sample_seed: int) -> StepOutput:
        images, mask, targets = batch
        images, mask = images.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        targets = to_device(targets, device)
        self.criterion.train()
        with autocast(device, precision):
            outputs = model(images, mask)
        counts = self._global_counts(targets, outputs["pred_logits"].shape[1], device)
        losses = self.criterion(outputs, targets, counts, self.info.world_size)
        n = int(images.shape[0])
        # Under DDP each component is this rank's share of the global loss times world size: an
        # estimate of the global value, and its image-weighted sum over ranks is exactly that value.
        log = {k: float(losses[k].item()) for k in _COMPONENTS}
        sums = {k: v * n for k, v in log.items()}
        sums["bad_pred_boxes"] = log["bad_pred_boxes"] = float(losses["bad_pred_boxes"].item())
        sums["bad_samples"] = float(sum(bool(t.get("substituted")) for t in targets))  # stand-ins for unreadable files
        return StepOutput(loss=losses["loss"], images=n, sums=sums, log=log)

    def summarize(self, sums: dict[str, float], images: int, micro_batches: int) -> dict[str, float]:
        out = {f"train_{k}": sums.get(k, 0.0) / max(images, 1) for k in _COMPONENTS}
        out["bad_pred_boxes"] = sums.get("bad_pred_boxes", 0.0)
        out["bad_samples"] = int(sums.get("bad_samples", 0.0))
        return out

    def evaluate(self, model: nn.Module, device: torch.device, precision: str, info: DistInfo,
                 prefix: str) -> dict[str, float]:
        """Losses and COCO AP over the whole validation set (every rank computes the same figures)."""
        self.criterion.eval()
        loader = DataLoader(self.val_data, batch_size=self.eval_batch_size, num_workers=self.workers,
                            collate_fn=collate_detection)
        stats, results = evaluate(model, self.criterion, loader, device, precision)
        metrics = {prefix + k[len("val_"):]: v for k, v in stats.items()}
        metrics.update({f"{prefix}{k}": v for k, v in coco_map(self._gt, results).items()})
        return metrics

    def data_fingerprint(self) -> dict[str, Any]:
        """Samples and classes, plus a digest of the training images' COCO ids and file names and
        the number of annotations (COCO), or the synthetic set's generating parameters."""
        raw = getattr(self.train_data, "dataset", self.train_data)  # under the SeededSamples
        out = super().data_fingerprint()
        if hasattr(raw, "images") and hasattr(raw, "ann_file"):
            listing = "\n".join(f"{im['id']}\0{im['file_name']}" for im in raw.images)
            out["images_digest"] = hashlib.sha256(listing.encode()).hexdigest()[:16]
            out["annotations"] = len(getattr(raw, "_raw_anns", []))
        elif hasattr(raw, "seed") and hasattr(raw, "size"):
            out["synthetic"] = {"size": int(raw.size), "seed": int(raw.seed), "max_objects": int(raw.max_objects)}
        return out

    def describe(self) -> str:
        return (f"{len(self.train_data)} images, {len(self.class_names)} classes; "  # type: ignore[arg-type]
                f"validating on {len(self.val_data)} ({self.val_split})")

    def epoch_line(self, record: dict[str, Any]) -> str:
        val = f", val AP {record['val_AP']:.1f} AP50 {record['val_AP50']:.1f}" if "val_AP" in record else ""
        if "ema_val_AP" in record:
            val += f", EMA val AP {record['ema_val_AP']:.1f}"
        bad = f", {record['skipped']} skipped steps" if record.get("skipped") else ""
        return (f"loss {record['train_loss']:.3f} (ce {record['train_loss_ce']:.3f}, l1 {record['train_loss_bbox']:.3f}, "
                f"giou {record['train_loss_giou']:.3f}), {record['images'] / max(record['seconds'], 1e-9):.1f} img/s"
                f"{bad}{val}")
