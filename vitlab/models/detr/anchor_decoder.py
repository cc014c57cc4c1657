"""Anchor-box queries with iterative box refinement (DAB-DETR, Liu et al. 2022; Conditional DETR,
Meng et al. 2021; the refinement as in Deformable DETR, Zhu et al. 2021).

Each object query owns a learnable 4-d anchor box (cx, cy, w, h, stored as logits). Before every
decoder layer its positional query is an MLP of the anchor's sine embedding, so a slot looks where
its box is; after every layer the shared box head predicts a delta in inverse-sigmoid space, the
refined box is that layer's prediction, and the next layer's anchor is the refined box *detached*
(gradients of a layer's box loss stop at its own delta, which is what makes the refinement stable).

The decoder layers are the original DETR's (``transformer.DecoderLayer``: positions added to
queries and keys, never values); only where ``query_pos`` comes from changes.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

_EPS = 1e-5


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """logit(x), with x clamped away from 0 and 1 so the result stays finite."""
    x = x.clamp(_EPS, 1 - _EPS)
    return torch.log(x / (1 - x))


def box_sine_embed(boxes: torch.Tensor, d_model: int, temperature: float = 10000.0) -> torch.Tensor:
    """(..., 4) normalised cxcywh -> (..., 2 * d_model): ``d_model / 2`` interleaved sine/cosine
    channels per coordinate, positions scaled to [0, 2 pi], in the order (y, x, w, h) as DETR's
    image encodings put y first (DAB-DETR's ``gen_sineembed_for_position``)."""
    n = d_model // 2
    idx = torch.arange(n, device=boxes.device, dtype=boxes.dtype)
    freq = temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / n)
    pos = boxes[..., [1, 0, 2, 3], None] * (2 * math.pi) / freq  # (..., 4, n)
    pos = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)
    return pos.flatten(-2)


class _MLP(nn.Module):
    """Linear-ReLU-Linear (DAB-DETR's ``ref_point_head``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(input_dim, hidden_dim), nn.Linear(hidden_dim, output_dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](torch.relu(self.layers[0](x)))


class AnchorDecoder(nn.Module):
    """DETR decoder whose slots carry anchor boxes refined layer by layer.

    Args:
        layers: the decoder layers, ``(tgt, memory, key_padding_mask, pos, query_pos) -> tgt``
            (``transformer.DecoderLayer``).
        d_model: model width D.
    """

    def __init__(self, layers: list[nn.Module], d_model: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)
        self.ref_point_head = _MLP(2 * d_model, d_model, d_model)
        self.d_model = d_model

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, memory_key_padding_mask: torch.Tensor | None,
                pos: torch.Tensor | None, anchors: torch.Tensor,
                box_head: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode and refine.

        Args:
            tgt: (B, Q, D) initial slot content (zeros).
            memory: (B, T, D) encoder output; pos: (B, T, D) its positions.
            anchors: (B, Q, 4) initial boxes, normalised cxcywh in (0, 1).
            box_head: maps (..., D) slot states to (..., 4) deltas in inverse-sigmoid space.

        Returns:
            (hs (L, B, Q, D) every layer's normalised output, boxes (L, B, Q, 4) refined boxes;
            layer l > 0's boxes carry gradients into layer l's delta only, layer 0's also into the
            anchors).
        """
        outs, boxes = [], []
        ref = anchors  # not detached: the learnable anchors get their gradient through layer 0
        for layer in self.layers:
            query_pos = self.ref_point_head(box_sine_embed(ref, self.d_model))
            tgt = layer(tgt, memory, memory_key_padding_mask, pos, query_pos)
            hs = self.norm(tgt)
            refined = (box_head(hs) + inverse_sigmoid(ref)).sigmoid()
            outs.append(hs)
            boxes.append(refined)
            ref = refined.detach()
        return torch.stack(outs), torch.stack(boxes)
