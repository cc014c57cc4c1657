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
    ece_bins: int = 15
    # (3, bins) float64: per confidence bin, the count, the summed confidence, the summed correctness
    calibration: torch.Tensor | None = None

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
        conf, _ = logits.softmax(dim=1).max(dim=1)
        conf = torch.nan_to_num(conf.cpu().double(), nan=0.0)  # non-finite logits: lowest bin
        hit = (pred == targets.cpu()).double()
        idx = (conf * self.ece_bins).long().clamp_(max=self.ece_bins - 1)
        cal = torch.zeros(3, self.ece_bins, dtype=torch.float64)
        cal[0].index_add_(0, idx, torch.ones_like(conf))
        cal[1].index_add_(0, idx, conf)
        cal[2].index_add_(0, idx, hit)
        self.calibration = cal if self.calibration is None else self.calibration + cal

    def expected_calibration_error(self) -> float:
        """ECE (Guo et al. 2017): sum over bins of |accuracy - confidence| weighted by bin share, in percent."""
        if self.calibration is None or self.count == 0:
            return float("nan")
        count, conf, hit = self.calibration
        gap = (hit - conf).abs()  # per bin: count * |acc - conf|
        return float(100.0 * gap.sum() / count.sum())

    def result(self) -> dict[str, float]:
        """{"loss", "top1", "top5", "ece"} with accuracies and ECE in percent."""
        n = max(self.count, 1)
        out = {"loss": self.loss_sum / n}
        for k in self.topk:
            out[f"top{k}"] = 100.0 * self.correct.get(k, 0) / n
        out["ece"] = self.expected_calibration_error()
        return out

    def merge(self, other: ClassificationMeter) -> None:
        """Add another meter's counts (e.g. from another process)."""
        self.count += other.count
        self.loss_sum += other.loss_sum
        for k, v in other.correct.items():
            self.correct[k] = self.correct.get(k, 0) + v
        for name in ("confusion", "calibration"):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, theirs if mine is None else (mine if theirs is None else mine + theirs))

    def to_tensor(self) -> torch.Tensor:
        """All counts as one float64 vector (for an all-reduce); inverse :meth:`from_tensor`."""
        C = self.num_classes
        conf = self.confusion if self.confusion is not None else torch.zeros(C, C, dtype=torch.long)
        cal = self.calibration if self.calibration is not None else torch.zeros(3, self.ece_bins, dtype=torch.float64)
        head = torch.tensor([self.count, self.loss_sum, *[self.correct.get(k, 0) for k in self.topk]], dtype=torch.float64)
        return torch.cat([head, conf.double().flatten(), cal.flatten()])

    def from_tensor(self, t: torch.Tensor) -> None:
        C, k = self.num_classes, len(self.topk)
        self.count, self.loss_sum = int(t[0]), float(t[1])
        self.correct = {kk: int(v) for kk, v in zip(self.topk, t[2 : 2 + k].tolist())}
        self.confusion = t[2 + k : 2 + k + C * C].round().long().reshape(C, C)
        self.calibration = t[2 + k + C * C :].reshape(3, self.ece_bins).clone()

    def per_class_accuracy(self) -> torch.Tensor:
        """(C,) accuracy in percent per true class (NaN for classes absent from the data)."""
        conf = self.confusion if self.confusion is not None else torch.zeros(self.num_classes, self.num_classes)
        support = conf.sum(dim=1).double()
        return 100.0 * conf.diagonal().double() / support.where(support > 0, torch.tensor(float("nan")))
