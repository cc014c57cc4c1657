"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on a batch, with soft targets.

Randomness comes from an explicit generator seeded per step, so a resumed run mixes exactly
as the uninterrupted one did.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class MixupCutmix:
    """Per batch: with probability ``prob`` mix, choosing CutMix with ``switch_prob`` else Mixup.

    Args:
        num_classes: classes of the one-hot targets.
        mixup_alpha: Beta(alpha, alpha) for the Mixup ratio (0 disables Mixup).
        cutmix_alpha: Beta(alpha, alpha) for the CutMix area (0 disables CutMix).
        prob: probability of mixing a batch at all.
        switch_prob: probability of CutMix when both are enabled.
        label_smoothing: smoothing applied to the one-hot targets before mixing.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.0) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0 or mixup_alpha + cutmix_alpha == 0:
            raise ValueError("need mixup_alpha > 0 or cutmix_alpha > 0 (and neither negative)")
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing

    def soft_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """(B,) int -> (B, C) smoothed one-hot."""
        off = self.label_smoothing / self.num_classes
        return F.one_hot(targets, self.num_classes).float() * (1.0 - self.label_smoothing) + off

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W), targets (B,) -> mixed images, soft targets (B, num_classes)."""
        soft = self.soft_targets(targets)
        if torch.rand((), generator=gen).item() >= self.prob:
            return images, soft
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha == 0 or torch.rand((), generator=gen).item() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = _beta(alpha, gen)
        flipped = images.flip(0)
        if use_cutmix:
            H, W = images.shape[-2:]
            cut = math.sqrt(1.0 - lam)
            ch, cw = int(H * cut), int(W * cut)
            cy = int(torch.randint(0, H, (), generator=gen))
            cx = int(torch.randint(0, W, (), generator=gen))
            y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, H)
            x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, W)
            images = images.clone()
            images[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (H * W)  # the area actually pasted
        else:
            images = images * lam + flipped * (1.0 - lam)
        return images, soft * lam + soft.flip(0) * (1.0 - lam)


def _beta(alpha: float, gen: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw from two Gamma draws using ``gen`` (torch's Beta has no generator)."""
    # torch.distributions.Beta cannot take a generator. Beta(a, a) = X / (X + Y) with
    # X, Y ~ Gamma(a), and Gamma is sampled by Marsaglia-Tsang from draws of ``gen``.
    x, y = _gamma(alpha, gen), _gamma(alpha, gen)
    return x / (x + y)


def _gamma(alpha: float, gen: torch.Generator) -> float:
    boost = 1.0
    if alpha < 1.0:
        boost = float(torch.rand((), generator=gen)) ** (1.0 / alpha)
        alpha += 1.0
    d = alpha - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        z = float(torch.randn((), generator=gen))
        v = (1.0 + c * z) ** 3
        if v <= 0:
            continue
        u = float(torch.rand((), generator=gen))
        if math.log(max(u, 1e-300)) < 0.5 * z * z + d - d * v + d * math.log(v):
            return d * v * boost
