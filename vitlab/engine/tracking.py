"""Run logging beyond the JSONL file: TensorBoard event files and end-of-run PNG plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class TensorBoard:
    """Scalars to ``RUN/tb``; a no-op (with one warning) when the tensorboard package is missing."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("TensorBoard logging is off: install the tensorboard package (pip install tensorboard)")
            return
        self.writer = SummaryWriter(str(folder))

    def log(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(record.get("step", 0))
        prefix = "train" if record.get("kind") == "train" else "epoch"
        for key, value in record.items():
            if key in ("kind", "step", "epoch") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_records(metrics: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl (a torn last line from a crash is ignored)."""
    out = []
    if not metrics.is_file():
        return out
    for line in metrics.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_records(metrics: Path, step: int, epoch: int) -> None:
    """Keep train records up to ``step`` and epoch records before ``epoch`` (resume after a crash)."""
    from vitlab.utils.atomic import atomic_write

    keep = [r for r in read_records(metrics)
            if (r.get("kind") == "train" and r.get("step", 0) <= step) or (r.get("kind") == "epoch" and r.get("epoch", 0) < epoch)]
    blob = "".join(json.dumps(r) + "\n" for r in keep).encode()
    atomic_write(metrics, lambda f: f.write(blob))


def write_plots(metrics: Path, folder: Path) -> list[Path]:
    """loss.png, accuracy.png and lr.png from a run's metrics.jsonl; returns the files written."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    records = read_records(metrics)
    train = [r for r in records if r.get("kind") == "train"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    written = []
    if train:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, label="train (per logged step)")
        ev = [r for r in epochs if "val_loss" in r]
        if ev:
            ax.plot([r["step"] for r in ev], [r["val_loss"] for r in ev], "o-", label="validation")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.legend()
        ax.set_title("loss")
        fig.tight_layout()
        fig.savefig(folder / "loss.png", dpi=100)
        plt.close(fig)
        written.append(folder / "loss.png")
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["step"] for r in train], [r["lr"] for r in train])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("learning rate")
        ax.set_title("learning rate")
        fig.tight_layout()
        fig.savefig(folder / "lr.png", dpi=100)
        plt.close(fig)
        written.append(folder / "lr.png")
    ev = [r for r in epochs if "val_top1" in r]
    if ev:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["epoch"] + 1 for r in epochs], [r["train_top1"] for r in epochs], "o-", label="train top-1")
        ax.plot([r["epoch"] + 1 for r in ev], [r["val_top1"] for r in ev], "o-", label="val top-1")
        if any("ema_val_top1" in r for r in ev):
            ax.plot([r["epoch"] + 1 for r in ev if "ema_val_top1" in r],
                    [r["ema_val_top1"] for r in ev if "ema_val_top1" in r], "o--", label="EMA val top-1")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.legend()
        ax.set_title("accuracy")
        fig.tight_layout()
        fig.savefig(folder / "accuracy.png", dpi=100)
        plt.close(fig)
        written.append(folder / "accuracy.png")
    ap = [r for r in epochs if "val_AP" in r]
    if ap:  # detection: COCO box AP per validated epoch
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, style in (("val_AP", "o-"), ("val_AP50", "s-"), ("ema_val_AP", "o--")):
            if any(key in r for r in ap):
                ax.plot([r["epoch"] + 1 for r in ap if key in r], [r[key] for r in ap if key in r], style, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel("box AP (%)")
        ax.legend()
        ax.set_title("validation AP")
        fig.tight_layout()
        fig.savefig(folder / "ap.png", dpi=100)
        plt.close(fig)
        written.append(folder / "ap.png")
    return written
