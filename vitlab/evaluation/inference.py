"""Inference over a loader: all logits of a classifier, and a filled classification meter.

The classifier is a torch module (run here, eagerly, under autocast for ``precision``) or a
:class:`vitlab.runtime.Predictor` (compiled torch, ONNX Runtime, OpenVINO, ...), which owns its
device and precision; both see the same preprocessed batches.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from tqdm import tqdm

from vitlab.errors import DataError, NonFiniteError
from vitlab.evaluation.metrics import ClassificationMeter
from vitlab.evaluation.tta import tta_logits
from vitlab.runtime.base import Predictor
from vitlab.utils.device import autocast


def check_finite(images: torch.Tensor, logits: torch.Tensor, where: str) -> None:
    """Raise instead of reporting figures computed from NaN / inf.

    A non-finite input (a broken file, a normalisation with std 0) is a data error (exit 3); a
    non-finite output from finite inputs means the weights or the numerics are broken (exit 6).
    ``images`` (B, C, H, W) as fed to the model, ``logits`` (B, K).
    """
    if bool(torch.isfinite(logits).all()):
        return
    bad = (~torch.isfinite(images.flatten(1))).any(1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise DataError(f"{where}: {len(rows)} input image(s) hold NaN or inf after preprocessing (rows {rows[:5]} "
                        "of the batch): check the normalisation (mean / std) and the files")
    raise NonFiniteError(f"{where}: the model produced NaN or inf logits from finite inputs: its weights or "
                         "numerics are broken (try --precision fp32)")


def _logits(model: nn.Module | Predictor, images: torch.Tensor, device: torch.device, precision: str,
            tta: str = "none") -> torch.Tensor:
    """Logits (B, K) of one batch (B, C, H, W), averaged over ``tta``'s views.

    A Predictor runs each view itself; a module runs here, under autocast for ``precision``.
    """
    if isinstance(model, Predictor):
        return tta_logits(model, images, tta)
    with autocast(device, precision):
        return tta_logits(model, images.to(device, non_blocking=True), tta)


@torch.no_grad()
def predict_logits(
    model: nn.Module | Predictor, loader: Iterable, device: torch.device, precision: str, progress: bool = False,
    desc: str = "eval", tta: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits (N, C) float32 on CPU and targets (N,) of a loader, in loader order (eval mode).

    ``device`` and ``precision`` apply to a module; a Predictor was built with its own. ``tta``
    (:mod:`vitlab.evaluation.tta`): each image's logits averaged over that mode's views.
    """
    if isinstance(model, nn.Module):
        model.eval()
    outs, tgts = [], []
    for i, (images, targets) in enumerate(tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)):
        logits = _logits(model, images, device, precision, tta)
        check_finite(images.to(logits.device), logits, f"{desc}, batch {i}")
        outs.append(logits.float().cpu())
        tgts.append(targets.cpu())
    return torch.cat(outs), torch.cat(tgts)


@torch.no_grad()
def evaluate(
    model: nn.Module | Predictor,
    loader: Iterable,
    device: torch.device,
    precision: str,
    num_classes: int,
    progress: bool = False,
    desc: str = "eval",
    tta: str = "none",
) -> ClassificationMeter:
    """Run ``model`` (a module in eval mode, or a runtime's Predictor) over ``loader``; the filled meter."""
    logits, targets = predict_logits(model, loader, device, precision, progress, desc, tta)
    meter = ClassificationMeter(num_classes=num_classes)
    meter.update(logits, targets)
    return meter
