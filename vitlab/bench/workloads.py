"""What is timed: inference, training steps and attention capture, one variant per library and precision.

Every variant is a :data:`vitlab.bench.stats.Variant` built with :func:`vitlab.bench.timing.timed`,
so it runs on a fresh random batch each call and times only the library's work.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from vitlab.analysis.capture import capture_attention
from vitlab.bench.peers import Entry
from vitlab.bench.stats import Variant
from vitlab.bench.timing import random_images, timed
from vitlab.utils.device import autocast

Batch = tuple[torch.Tensor, torch.Tensor]


def variant_name(framework: str, precision: str) -> str:
    """Row name, e.g. ``timm fp32``."""
    return f"{framework} {precision}"


def inference_variants(entries: Sequence[Entry], shape: tuple[int, int, int, int], precisions: Sequence[str],
                       device: torch.device) -> dict[str, Variant]:
    """``logits(images)`` under inference mode (and autocast for bf16 / fp16) on (B, C, H, W) = ``shape``."""
    make = random_images(shape, device)
    out: dict[str, Variant] = {}
    for entry in entries:
        entry.model.eval()
        for prec in precisions:
            out[variant_name(entry.name, prec)] = timed(_infer(entry, prec, device), make, device)
    return out


def _infer(entry: Entry, precision: str, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(device, precision):
            return entry.logits(x)

    return run


def make_train_step(entry: Entry, precision: str, device: torch.device) -> Callable[[Batch], torch.Tensor]:
    """One optimizer step: forward, cross-entropy, backward, fused AdamW; returns the (detached) loss.

    Each step function has its own AdamW over ``entry.model``'s parameters, so two precisions of
    one library share the weights but not the optimizer state. Gradients are dropped after the
    step (``set_to_none``), so between steps only weights and AdamW state live.
    """
    model = entry.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))

    def step(batch: Batch) -> torch.Tensor:
        x, y = batch
        with autocast(device, precision):
            loss = F.cross_entropy(entry.logits(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def random_batch(shape: tuple[int, int, int, int], num_classes: int, device: torch.device) -> Callable[[], Batch]:
    """New random images (B, C, H, W) in [-1, 1] and random labels (B,) each call."""
    images = random_images(shape, device)
    return lambda: (images(), torch.randint(0, num_classes, (shape[0],), device=device))


def training_variants(entries: Sequence[Entry], shape: tuple[int, int, int, int], precisions: Sequence[str],
                      device: torch.device, num_classes: int) -> tuple[dict[str, Variant], dict[str, Callable]]:
    """(timed training steps per library and precision, the untimed step functions for the memory pass)."""
    make = random_batch(shape, num_classes, device)
    steps = {variant_name(e.name, p): make_train_step(e, p, device) for e in entries for p in precisions}
    return {name: timed(step, make, device) for name, step in steps.items()}, steps


def capture_variants(entries: Sequence[Entry], shape: tuple[int, int, int, int], device: torch.device) -> dict[str, Variant]:
    """Per library that can return attention maps: a plain forward and a forward returning every layer's maps.

    vitlab: :func:`vitlab.analysis.capture.capture_attention` on the same model. timm: its own
    ``timm.utils.AttentionExtract`` (hooks on ``attn_drop``) on a copy with fused attention off,
    which the hooks need. transformers: ``output_attentions=True`` on a copy with eager attention
    (SDPA cannot return the maps). Each plain forward runs the library's default fused path.
    """
    make = random_images(shape, device)
    out: dict[str, Variant] = {}
    for entry in entries:
        capture = _CAPTURES.get(entry.name)
        if capture is None:
            continue
        out[f"{entry.name} plain"] = timed(_infer(entry, "fp32", device), make, device)
        out[f"{entry.name} capture"] = timed(capture(entry), make, device)
    return out


def _capture_vitlab(entry: Entry) -> Callable[[torch.Tensor], object]:
    def run(x: torch.Tensor) -> object:
        with torch.inference_mode(), capture_attention(entry.model) as rec:
            entry.model(x)
        return rec.softmax

    return run


def _capture_timm(entry: Entry) -> Callable[[torch.Tensor], object]:
    from timm.utils import AttentionExtract

    unfused = copy.deepcopy(entry.model)
    for module in unfused.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    extract = AttentionExtract(unfused, method="hook")

    def run(x: torch.Tensor) -> object:
        with torch.inference_mode():
            return extract(x)

    return run


def _capture_hf(entry: Entry) -> Callable[[torch.Tensor], object]:
    eager = copy.deepcopy(entry.model)
    eager.set_attn_implementation("eager")

    def run(x: torch.Tensor) -> object:
        with torch.inference_mode():
            return eager(pixel_values=x, output_attentions=True).attentions

    return run


_CAPTURES = {"vitlab": _capture_vitlab, "timm": _capture_timm, "hf": _capture_hf}
NO_CAPTURE = {"torchvision": "torchvision's ViT calls nn.MultiheadAttention with need_weights=False: no maps to capture"}
