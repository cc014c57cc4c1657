"""DETR's attention as the paper draws it (Carion et al. 2020, Fig. 3 and Fig. 6), via the one recorder.

* Encoder self-attention: for a reference position of the feature map, its attention over every
  position (the paper: "the encoder separates instances").
* Decoder cross-attention: for each object query (a predicted box), its attention over the
  encoder's positions (the paper: "the decoder attends to object extremities").

Both are read from :class:`vitlab.layers.mha.MultiheadAttention` layers by
:func:`vitlab.layers.recorder.record_attention`; a feature-map cell stands for ``stride`` x ``stride``
input pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.errors import ConfigError
from vitlab.layers.recorder import record_attention
from vitlab.models.detr.postprocess import class_probs


@dataclass
class DetrAttention:
    """The attention of one DETR forward over B images (Q queries, T = h * w feature positions).

    Attributes:
        encoder: per encoder layer, (B, H, T, T) self-attention; rows sum to 1 over unpadded positions.
        decoder: per decoder layer, (B, H, Q, T) cross-attention of the object queries.
        feature_size: (h, w) of the feature map; position t is cell (t // w, t % w).
        stride: input pixels per feature cell.
        pred_logits: (B, Q, C + 1) with the last class "no object" (``class_head`` "softmax", the
            paper's), or (B, Q, C) independent sigmoid logits (``class_head`` "sigmoid", the focal head);
            pred_boxes: (B, Q, 4) cxcywh in [0, 1].
    """

    encoder: list[torch.Tensor]
    decoder: list[torch.Tensor]
    feature_size: tuple[int, int]
    stride: int
    pred_logits: torch.Tensor
    pred_boxes: torch.Tensor
    class_head: str = "softmax"

    def class_probs(self) -> torch.Tensor:
        """(B, Q, C) probability of each object class per query, read the way the class head was trained."""
        return class_probs(self.pred_logits, self.class_head)

    def scores(self) -> torch.Tensor:
        """(B, Q) probability of each query's most likely object class ("no object" excluded)."""
        return self.class_probs().max(-1).values

    def top_queries(self, image: int, k: int) -> list[int]:
        """The ``k`` queries of ``image`` with the highest object score, best first."""
        return self.scores()[image].argsort(descending=True)[:k].tolist()

    def encoder_map(self, image: int, point: tuple[float, float], layer: int = -1) -> torch.Tensor:
        """(h, w) head-averaged attention of the position under ``point`` (y, x in input pixels)."""
        if not self.encoder:
            raise ConfigError("this DETR has no encoder layers (enc_layers: 0)")
        h, w = self.feature_size
        r = min(max(int(point[0] // self.stride), 0), h - 1)
        c = min(max(int(point[1] // self.stride), 0), w - 1)
        return self.encoder[layer][image].mean(0)[r * w + c].view(h, w)

    def decoder_maps(self, image: int, queries: list[int], layer: int = -1) -> torch.Tensor:
        """(len(queries), h, w) head-averaged cross-attention of those queries."""
        return self.decoder[layer][image].mean(0)[queries].view(len(queries), *self.feature_size)

    def to_pixels(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(..., h, w) cell maps -> (..., H, W) over the input's top-left ``size`` (the rest is padding)."""
        lead = maps.shape[:-2]
        h, w = self.feature_size
        up = F.interpolate(maps.reshape(-1, 1, h, w).float(), size=(h * self.stride, w * self.stride),
                           mode="bilinear", align_corners=False)
        return up[..., : size[0], : size[1]].reshape(*lead, *size)


@torch.no_grad()
def detr_attention(model: nn.Module, images: torch.Tensor, mask: torch.Tensor | None = None) -> DetrAttention:
    """Run a DETR (eval mode) on (B, 3, H, W) images and record its encoder and decoder attention."""
    transformer = getattr(model, "transformer", None)
    if transformer is None or not hasattr(transformer, "decoder"):
        raise ConfigError(f"{type(model).__name__} is not a DETR (no transformer encoder-decoder)")
    enc = [layer.self_attn for layer in transformer.encoder.layers]
    dec = [layer.multihead_attn for layer in transformer.decoder.layers]
    was_training = model.training
    model.eval()
    try:
        with record_attention(model, [*enc, *dec], mixed=False) as rec:
            out = model(images, mask)
    finally:
        model.train(was_training)
    maps = rec.maps("softmax")
    return DetrAttention(maps[: len(enc)], maps[len(enc):], tuple(out["feature_size"]), int(model.backbone.stride),
                         out["pred_logits"], out["pred_boxes"], out.get("class_head", "softmax"))
