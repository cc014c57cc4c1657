"""Sine position encodings of a 2-D feature map (DETR paper, appendix A.4).

Each of y and x gets ``num_pos_feats`` channels (half of the model width): the cumulative count
of valid (unpadded) pixels along the axis, normalised to [0, 2pi] over the valid extent, through
sines and cosines at geometric frequencies. Padding therefore never shifts the encoding of the
real image.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """mask (B, H, W), True on padding -> position encodings (B, 2 * num_pos_feats, H, W).

    Args:
        num_pos_feats: channels per axis (the model width is twice this).
        temperature: base of the frequency progression.
        normalize: divide the cumulative positions by the valid extent (as the authors' default).
        scale: the value the normalised positions run to (2 pi).
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, normalize: bool = True,
                 scale: float = 2 * math.pi, eps: float = 1e-6) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps

    def forward(self, mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        valid = (~mask).to(dtype)
        y = valid.cumsum(1)  # (B, H, W): 1..h_valid down each column
        x = valid.cumsum(2)
        if self.normalize:
            y = y / (y[:, -1:, :] + self.eps) * self.scale
            x = x / (x[:, :, -1:] + self.eps) * self.scale
        idx = torch.arange(self.num_pos_feats, device=mask.device, dtype=dtype)
        freq = self.temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x[..., None] / freq  # (B, H, W, F)
        pos_y = y[..., None] / freq
        # interleave: sin on even channels, cos on odd channels
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
