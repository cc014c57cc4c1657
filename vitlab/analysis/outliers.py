"""High-norm outlier tokens per layer ("Vision Transformers Need Registers", Darcet et al., ICLR 2024).

Large, long-trained ViTs without registers (DINOv2, OpenCLIP, DeiT-III) recycle a few patch tokens
of low-information background as scratch space for global computation: those tokens' outputs have
a norm far above the rest (on DINOv2 ViT-g about 2% of patch tokens lie above 150, the paper's
cut, where ordinary ones stay below ~100), they carry global rather than local information, and
they make attention maps noisy. Register tokens give the model that scratch space, and the
outliers go.

The paper's criterion is an absolute norm cut read off one model's bimodal histogram; norms differ
between models and layers by orders of magnitude, so vitlab uses a scale-free cut instead:

    a patch token is an outlier in a layer of an image if its norm > ``factor`` x the 90th
    percentile of that image's patch-token norms in that layer (``factor`` 2 by default).

Why the 90th percentile and not the median: the reference must be the top of the *ordinary*
tokens. Token norms follow content (on MNIST the digit strokes are ~5x the blank background), so a
multiple of the median flags content in untrained models; the 90th percentile sits at the top of
the ordinary tokens as long as outliers are under 10% of an image's patches (the paper: ~2%).
Measured on random-init vitlab ViTs (16 images each: pico on MNIST, tiny/16 on Imagenette, tiny/4
on CIFAR-10) the largest patch norm is at most 1.7x that percentile in every layer, against up to
5.4x the median; twice the percentile is then "far above the rest", and on the paper's numbers
(ordinary tokens below ~100, outliers above 150) it lands near its cut.

The norms are those of each block's output (the residual stream, before the final norm), from
``forward_intermediates``. Registers and the other prefix tokens are never counted as outliers;
their norms are reported apart, relative to the same reference.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import nn

from vitlab.analysis.layout import TokenLayout, layout_of
from vitlab.errors import ConfigError

DEFAULT_FACTOR = 2.0
REFERENCE_QUANTILE = 0.9  # the top of the ordinary tokens while outliers are under 10% (see above)


def reference_norm(patch_norms: torch.Tensor) -> torch.Tensor:
    """(..., N) patch-token norms -> (...,) their 90th percentile: the scale the cut is a multiple of.

    Linear interpolation between order statistics, as ``torch.quantile``; by sorting, because
    ``torch.quantile`` refuses inputs of more than 2**24 elements (many images of a large model).
    """
    ordered = patch_norms.float().sort(dim=-1).values
    pos = REFERENCE_QUANTILE * (ordered.shape[-1] - 1)
    lo, frac = int(pos), pos - int(pos)
    hi = min(lo + 1, ordered.shape[-1] - 1)
    return ordered[..., lo] * (1 - frac) + ordered[..., hi] * frac


def outlier_mask(patch_norms: torch.Tensor, factor: float = DEFAULT_FACTOR) -> torch.Tensor:
    """(..., N) patch-token norms -> bool (..., N): norm > factor x :func:`reference_norm` over the last axis."""
    if not factor > 1.0:
        raise ConfigError(f"--outlier-factor must be above 1 (a multiple of the reference norm), got {factor}")
    return patch_norms > factor * reference_norm(patch_norms)[..., None]


@dataclass(frozen=True)
class TokenNorms:
    """L2 norms of every token after every block, over N images (L layers, T tokens); derived values cached."""

    layer_names: list[str]
    layout: TokenLayout
    norms: torch.Tensor  # (N, L, T), float32
    factor: float = DEFAULT_FACTOR

    @property
    def patch_norms(self) -> torch.Tensor:
        """(N, L, P) norms of the patch tokens."""
        return self.norms[..., self.layout.num_prefix:]

    @cached_property
    def reference(self) -> torch.Tensor:
        """(N, L) 90th-percentile patch-token norm per image and layer: the scale every ratio is taken against."""
        return reference_norm(self.patch_norms)

    @cached_property
    def ratio(self) -> torch.Tensor:
        """(N, L, T) every token's norm / the reference norm of its image and layer."""
        return self.norms / self.reference[..., None].clamp_min(1e-30)

    @cached_property
    def outliers(self) -> torch.Tensor:
        """bool (N, L, P): the patch tokens above the cut (see the module docstring)."""
        return outlier_mask(self.patch_norms, self.factor)

    def worst_layer(self) -> int:
        """The layer with the most outliers (the last layer when there are none)."""
        counts = self.outliers.sum(dim=(0, 2))
        return int(counts.argmax()) if int(counts.max()) > 0 else len(self.layer_names) - 1

    def listed(self, limit: int = 50) -> list[dict[str, Any]]:
        """The ``limit`` strongest outliers: image, layer, token index, grid row / column, norm, ratio."""
        mask = self.outliers
        p, gw = self.layout.num_prefix, self.layout.grid[1]
        ratio = self.ratio[..., p:]
        idx = mask.nonzero()
        order = ratio[mask].argsort(descending=True)[:limit]
        out = []
        for n, layer, j in idx[order].tolist():
            out.append({"image": n, "layer": layer, "token": p + j, "row": j // gw, "col": j % gw,
                        "norm": float(self.patch_norms[n, layer, j]), "ratio": float(ratio[n, layer, j])})
        return out

    def per_layer(self) -> dict[str, Any]:
        """Per layer (lists of length L), averaged over images where it is a mean."""
        mask, ratio, groups = self.outliers, self.ratio, self.layout.groups()
        out: dict[str, Any] = {
            "median_patch_norm": self.patch_norms.median(dim=-1).values.mean(0).tolist(),
            "reference_patch_norm": self.reference.mean(0).tolist(),
            "max_patch_ratio": ratio[..., self.layout.num_prefix:].amax(dim=(0, 2)).tolist(),
            "outlier_count": mask.sum(dim=(0, 2)).tolist(),
            "outlier_fraction": mask.float().mean(dim=(0, 2)).tolist(),
            "images_with_outliers": mask.any(dim=2).sum(0).tolist(),
        }
        for kind in ("class", "dist", "registers"):
            if kind in groups:  # (N, L, k) -> per layer, per token of that kind, image-averaged
                out[f"{kind}_norm_ratio"] = ratio[..., groups[kind]].mean(0).tolist()
        return out

    def summary(self, limit: int = 50) -> dict[str, Any]:
        """Plain JSON-able data: the rule, per-layer figures and the strongest outliers."""
        frac = self.outliers.float().mean(dim=(0, 2))
        return {
            "rule": f"patch token norm > {self.factor:g} x the 90th percentile of the patch-token norms of its "
                    "image and layer (block outputs, before the final norm); ratios are to that percentile",
            "factor": self.factor,
            "images": int(self.norms.shape[0]),
            "layers": self.layer_names,
            "num_prefix_tokens": self.layout.num_prefix,
            "num_register_tokens": self.layout.num_registers,
            "outlier_fraction": float(self.outliers.float().mean()),
            "layers_with_outliers": [i for i, f in enumerate(frac.tolist()) if f > 0],
            "per_layer": self.per_layer(),
            "strongest": self.listed(limit),
        }


@torch.no_grad()
def token_norms(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    factor: float = DEFAULT_FACTOR,
    device: torch.device | str = "cpu",
) -> TokenNorms:
    """Run ``model`` (eval mode) over (B, C, H, W) ``batches``; keep the (B, L, T) token norms of every block.

    Raises:
        ConfigError: the model has no ``forward_intermediates`` (not a ViT), or no images.
    """
    outlier_mask(torch.ones(1), factor)  # validate the factor before any forward
    if not hasattr(model, "forward_intermediates"):
        raise ConfigError(f"{type(model).__name__} has no forward_intermediates; outliers need a ViT")
    layout = layout_of(model)
    was_training = model.training
    model.eval()
    chunks: list[torch.Tensor] = []
    try:
        for x in batches:
            out = model.forward_intermediates(x.to(device))
            chunks.append(torch.stack([h.float().norm(dim=-1) for h in out["blocks"]], 1).cpu())
    finally:
        model.train(was_training)
    if not chunks:
        raise ConfigError("no images to analyse")
    names = [f"blocks.{i}" for i in out["indices"]]
    return TokenNorms(names, layout, torch.cat(chunks), factor)


def compare(models: list[tuple[str, TokenNorms]]) -> list[dict[str, Any]]:
    """Models side by side (e.g. without and with registers): per-layer outlier fractions and peaks."""
    return [{"model": name, "num_register_tokens": t.layout.num_registers,
             "outlier_fraction": float(t.outliers.float().mean()),
             "outlier_fraction_per_layer": t.outliers.float().mean(dim=(0, 2)).tolist(),
             "max_patch_ratio_per_layer": t.ratio[..., t.layout.num_prefix:].amax(dim=(0, 2)).tolist()}
            for name, t in models]
