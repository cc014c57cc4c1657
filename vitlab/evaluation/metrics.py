"""Classification metrics accumulated over batches: top-k, loss, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class ClassificationMeter:
    """Accumulates logits-derived statistics; call :meth:`update` per batch, then :meth:`result`."""

    num_classes: int
    topk: tuple[int, ...] = (1, 5)
    count: int = 0
    loss_sum: float = 0.0
    correct: dict[int, int] = field(default_factory=dict)
    confusion: torch.Tensor | None = None  # (C, C) int64: rows = true class, columns = predicted

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """logits: (B, C) float; targets: (B,) int64 class indices."""
        logits = logits.float()
        self.loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        self.count += targets.numel()
        kmax = min(max(self.topk), logits.shape[1])
        top = logits.topk(kmax, dim=1).indices  # (B, kmax)
        hits = top.eq(targets[:, None])
        for k in self.topk:
            self.correct[k] = self.correct.get(k, 0) + int(hits[:, : min(k, kmax)].any(dim=1).sum())
        pred = top[:, 0].cpu()
        idx = targets.cpu() * self.num_classes + pred
        counts = torch.bincount(idx, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def result(self) -> dict[str, float]:
        """{"loss", "top1", "top5", ...} with accuracies in percent."""
        n = max(self.count, 1)
        out = {"loss": self.loss_sum / n}
        for k in self.topk:
            out[f"top{k}"] = 100.0 * self.correct.get(k, 0) / n
        return out

    def per_class_accuracy(self) -> torch.Tensor:
        """(C,) accuracy in percent per true class (NaN for classes absent from the data)."""
        conf = self.confusion if self.confusion is not None else torch.zeros(self.num_classes, self.num_classes)
        support = conf.sum(dim=1).double()
        return 100.0 * conf.diagonal().double() / support.where(support > 0, torch.tensor(float("nan")))
