"""Run logging beyond the JSONL file: TensorBoard event files and end-of-run PNG plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vitlab.utils.atomic import writing
from vitlab.utils.lr_curve import lr_points, lr_title

log = logging.getLogger(__name__)


class TensorBoard:
    """Scalars to ``RUN/tb``; a no-op (with one warning) when the tensorboard package is missing.

    The event writer runs in a thread and re-raises a failed write on a later call, without a file
    name: every call is wrapped so a full disk names ``RUN/tb`` (DiskFullError / NotWritableError).
    """

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.writer = None
        self.folder = folder
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("TensorBoard logging is off: install the tensorboard package (pip install tensorboard)")
            return
        with writing(folder):
            self.writer = SummaryWriter(str(folder))

    def log(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(record.get("step", 0))
        prefix = "train" if record.get("kind") in ("train", "lr") else "epoch"
        with writing(self.folder):
            for key, value in record.items():
                if key in ("kind", "step", "epoch") or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            with writing(self.folder):
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


_STEP_RECORDS = frozenset({"train", "skipped_step", "lr"})


def truncate_records(metrics: Path, step: int, epoch: int) -> None:
    """Keep step records (train, skipped, lr) up to ``step`` and epoch records before ``epoch`` (resume after a crash)."""
    from vitlab.utils.atomic import atomic_write

    keep = [r for r in read_records(metrics)
            if (r.get("kind") in _STEP_RECORDS and r.get("step", 0) <= step)
            or (r.get("kind") == "epoch" and r.get("epoch", 0) < epoch)]
    blob = "".join(json.dumps(r) + "\n" for r in keep).encode()
    atomic_write(metrics, lambda f: f.write(blob))


Series = tuple[str, list[float], list[float], str]  # (label, x, y, matplotlib style)


def _figure(path: Path, series: list[Series], xlabel: str, ylabel: str, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, xs, ys, style in series:
        ax.plot(xs, ys, style, lw=0.8 if style in ("-", ".-") else 1.5, ms=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)  # steps and epochs are whole numbers
    if len(series) > 1:
        ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    try:
        with writing(path):
            fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def _by_epoch(epochs: list[dict[str, Any]], key: str, label: str, style: str) -> list[Series]:
    rows = [r for r in epochs if key in r]
    return [(label, [r["epoch"] + 1 for r in rows], [r[key] for r in rows], style)] if rows else []


def write_plots(metrics: Path, folder: Path) -> list[Path]:
    """loss.png and lr.png, and accuracy.png (classification) or ap.png (detection), from a run's
    metrics.jsonl; returns the files written."""
    records = read_records(metrics)
    train = [r for r in records if r.get("kind") == "train"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    written = []
    if train:
        steps = [r["step"] for r in train]
        loss = [("train (per logged step)", steps, [r["loss"] for r in train], "-")]
        for key, label, style in (("val_loss", "validation", "o-"), ("ema_val_loss", "EMA validation", "o--")):
            val = [r for r in epochs if key in r]  # ema.validate_raw: false leaves only the EMA's
            loss += [(label, [r["step"] for r in val], [r[key] for r in val], style)] if val else []
        written.append(_figure(folder / "loss.png", loss, "optimizer step", "loss", "loss"))
        lr_steps, rates, spacing = lr_points(records)  # every step the log holds: the warmup ramp shows
        written.append(_figure(folder / "lr.png", [("lr", lr_steps, rates, ".-" if len(rates) <= 200 else "-")],
                               "optimizer step", "learning rate", lr_title(spacing)))
    if any("val_top1" in r or "ema_val_top1" in r for r in epochs):
        acc = (_by_epoch(epochs, "train_top1", "train top-1", "o-") + _by_epoch(epochs, "val_top1", "val top-1", "o-")
               + _by_epoch(epochs, "ema_val_top1", "EMA val top-1", "o--"))
        written.append(_figure(folder / "accuracy.png", acc, "epoch", "accuracy (%)", "accuracy"))
    if any("val_AP" in r for r in epochs):  # detection: COCO box AP per validated epoch
        ap = (_by_epoch(epochs, "val_AP", "val AP", "o-") + _by_epoch(epochs, "val_AP50", "val AP50", "s-")
              + _by_epoch(epochs, "ema_val_AP", "EMA val AP", "o--"))
        written.append(_figure(folder / "ap.png", ap, "epoch", "box AP (%)", "validation AP"))
    return written
