"""timm's ``forward_intermediates`` contract for vitlab's ViT, for timm-based downstream code.

Detectors and segmenters written against timm call ``model.forward_intermediates(x, indices=...,
intermediates_only=True)`` and expect a list of (B, D, gh, gw) feature maps (or, without
``intermediates_only``, the pair (final normalised tokens, that list)). vitlab's own
``forward_intermediates`` returns a dict (stable keys for the analyses); passing any of timm's
keywords selects this contract instead, with timm's semantics (timm 1.0's
``VisionTransformer.forward_intermediates``): prefix tokens (class, distillation, registers) are
split off, ``norm`` applies the final norm to each, ``stop_early`` skips the later blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

OutputFmt = Literal["NCHW", "NLC"]
TimmResult = list[Any] | tuple[torch.Tensor, list[Any]] | dict[str, Any]


def timm_intermediates(
    model: nn.Module,
    x: torch.Tensor,
    take: Sequence[int],
    norm: bool = False,
    output_fmt: OutputFmt = "NCHW",
    intermediates_only: bool = False,
    return_prefix_tokens: bool = False,
    stop_early: bool = False,
    output_dict: bool = False,
) -> TimmResult:
    """Run a vitlab ``VisionTransformer`` on x (B, C, H, W); return blocks ``take``'s outputs as timm does.

    Each intermediate is (B, D, gh, gw) for ``"NCHW"`` or (B, gh * gw, D) for ``"NLC"``; with
    ``return_prefix_tokens`` it is paired with its (B, prefix, D) prefix tokens. Returns the list
    (``intermediates_only``), else (final tokens (B, T, D), list), or with ``output_dict`` the dict
    ``image_intermediates`` [, ``image_intermediates_prefix``] [, ``image_features``].
    """
    if output_fmt not in ("NCHW", "NLC"):
        raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
    blocks = model.blocks[: max(take) + 1] if stop_early else model.blocks
    h = model.embed(x)
    outs = []
    for i, blk in enumerate(blocks):
        h = blk(h)
        if i in take:
            outs.append(model.norm(h) if norm else h)
    n = model.num_prefix_tokens
    prefix = [y[:, :n] for y in outs] if n else None
    outs = [y[:, n:] for y in outs]
    if output_fmt == "NCHW":
        gh, gw = model.patch_embed.grid_size
        outs = [y.reshape(y.shape[0], gh, gw, -1).permute(0, 3, 1, 2).contiguous() for y in outs]
    if output_dict:
        result: dict[str, Any] = {"image_intermediates": outs}
        if prefix is not None and return_prefix_tokens:
            result["image_intermediates_prefix"] = prefix
        if not intermediates_only:
            result["image_features"] = model.norm(h)
        return result
    if return_prefix_tokens and prefix is not None:
        outs = list(zip(outs, prefix))
    return outs if intermediates_only else (model.norm(h), outs)
