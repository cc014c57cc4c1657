"""A ViT whose input size is free: the position table is interpolated inside the graph.

:class:`DynamicSizeViT` wraps a vitlab :class:`~vitlab.models.vit.VisionTransformer` for export
(``vitlab export --format onnx --dynamic-size``). For an input of H x W it resamples the learned
position table from the trained grid to (H / P, W / P) with bicubic interpolation (no
antialiasing, the form ONNX's Resize expresses), which is what
``model.set_input_size((H, W), method="bicubic", antialias=False)`` computes in eager PyTorch, and
then runs the model's own blocks, norm and head. At the trained size it is the model itself.

Only models whose token count is all that changes with the size qualify: the linear patch stem
and a learned position table; other stems or fixed tables are refused with one line.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.weights.errors import MappingError


def check_dynamic(model: nn.Module) -> None:
    """MappingError unless ``model`` can run at any size (see the module docstring)."""
    cfg = getattr(model, "config", None)
    why = []
    if cfg is None or not hasattr(model, "patch_embed"):
        why.append("not a vitlab ViT")
    else:
        if cfg.stem != "patch":
            why.append(f"stem {cfg.stem!r} (only the linear patch stem)")
        if getattr(model, "pos_embed", None) is None:
            why.append(f"pos_embed {cfg.pos_embed!r} (only a learned table is interpolated)")
    if why:
        raise MappingError("--dynamic-size: " + "; ".join(why))


class DynamicSizeViT(nn.Module):
    """images (B, C, H, W), H and W multiples of the patch size -> logits (B, classes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        check_dynamic(model)
        self.model = model

    def _pos(self, grid: tuple[torch.Tensor | int, torch.Tensor | int]) -> torch.Tensor:
        """The position table (1, prefix + gh * gw, D) for the patch grid ``grid``."""
        m = self.model
        pos, n = m.pos_embed, m.num_prefix_tokens
        gh0, gw0 = m.patch_embed.grid_size
        table = pos[:, n:].reshape(1, gh0, gw0, -1).permute(0, 3, 1, 2)  # (1, D, gh0, gw0)
        table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([pos[:, :n], table.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        patches = m.patch_embed.proj(x)  # (B, D, gh, gw): the stem without its fixed-size check
        pos = self._pos((patches.shape[-2], patches.shape[-1])).to(patches.dtype)
        t = patches.flatten(2).transpose(1, 2)
        # getattr: register tokens, no_embed_class and norm_pre are newer ViT features (DINOv2, CLIP)
        no_embed_class = getattr(m, "no_embed_class", False)
        if no_embed_class:
            t = t + pos[:, m.num_prefix_tokens:]
        prefix = [p.expand(t.shape[0], -1, -1) for p in (m.cls_token, m.dist_token, getattr(m, "reg_token", None))
                  if p is not None]
        if prefix:
            t = torch.cat([*prefix, t], dim=1)
        if not no_embed_class:
            t = t + pos
        t = m.pos_drop(t)
        if hasattr(m, "norm_pre"):
            t = m.norm_pre(t)
        for blk in m.blocks:
            t = blk(t)
        return m.forward_head(m.norm(t))
