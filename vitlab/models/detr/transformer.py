"""DETR's Transformer encoder-decoder (Carion et al. 2020, Fig. 10), post-norm.

Position information is added to the queries and keys of every attention (never to the
values), in every layer: the encoder's spatial encodings ``pos`` to the image tokens, the learned
object-query embeddings ``query_pos`` to the decoder slots. The decoder starts from zeros and
returns the normalised output of every layer, for the auxiliary losses.

Module names follow the authors' code (``self_attn``, ``multihead_attn``, ``linear1``, ``norm1``...)
so their checkpoints map onto this one key for key. Every attention is a
:class:`vitlab.layers.mha.MultiheadAttention` (``nn.MultiheadAttention`` with the same parameters),
so the one attention recorder (:mod:`vitlab.layers.recorder`) reads the encoder's self-attention
(B, H, T, T) and the decoder's cross-attention (B, H, Q, T) like any ViT's maps.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.layers.mha import MultiheadAttention
from vitlab.layers.recorder import record_attention
from vitlab.models.detr.anchor_decoder import AnchorDecoder


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class EncoderLayer(nn.Module):
    """x = LN(x + SA(x + pos, x + pos, x)); x = LN(x + FFN(x)). Tokens are (B, T, D)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, key_padding_mask: torch.Tensor | None, pos: torch.Tensor | None) -> torch.Tensor:
        q = k = _with_pos(src, pos)
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, src, key_padding_mask=key_padding_mask, need_weights=False)[0]))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class DecoderLayer(nn.Module):
    """Self-attention over the slots, cross-attention to the image tokens, FFN; post-norm each."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_key_padding_mask: torch.Tensor | None,
        pos: torch.Tensor | None,
        query_pos: torch.Tensor | None,
    ) -> torch.Tensor:
        """tgt (B, Q, D), memory (B, T, D) -> tgt (B, Q, D)."""
        q = k = _with_pos(tgt, query_pos)
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, need_weights=False)[0]))
        out = self.multihead_attn(_with_pos(tgt, query_pos), _with_pos(memory, pos), memory,
                                  key_padding_mask=memory_key_padding_mask, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(out))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class TransformerEncoder(nn.Module):
    def __init__(self, layers: list[EncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, src: torch.Tensor, key_padding_mask: torch.Tensor | None, pos: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, key_padding_mask, pos)
        return src


class TransformerDecoder(nn.Module):
    """Returns every layer's output through the shared final LayerNorm: (L, B, Q, D)."""

    def __init__(self, layers: list[DecoderLayer], d_model: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, memory_key_padding_mask: torch.Tensor | None,
                pos: torch.Tensor | None, query_pos: torch.Tensor | None) -> torch.Tensor:
        """tgt (B, Q, D), memory (B, T, D) -> (L, B, Q, D)."""
        outs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_key_padding_mask, pos, query_pos)
            outs.append(self.norm(tgt))
        return torch.stack(outs)


class Transformer(nn.Module):
    """Encoder-decoder over flattened image tokens and learned object queries.

    Args:
        d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout:
            paper defaults 256, 8, 6, 6, 2048, 0.1.
        anchor_queries: slots carry anchor boxes refined by every decoder layer
            (:mod:`~vitlab.models.detr.anchor_decoder`); False is the paper's decoder.
    """

    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, anchor_queries: bool = False) -> None:
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.anchor_queries = anchor_queries
        self.encoder = TransformerEncoder([EncoderLayer(d_model, nhead, dim_feedforward, dropout)
                                           for _ in range(num_encoder_layers)])
        layers = [DecoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_decoder_layers)]
        self.decoder: nn.Module = AnchorDecoder(layers, d_model) if anchor_queries else TransformerDecoder(layers, d_model)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self,
        src: torch.Tensor,
        mask: torch.Tensor,
        query_embed: torch.Tensor,
        pos_embed: torch.Tensor,
        need_weights: bool = False,
        box_head: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Run encoder and decoder.

        Args:
            src: (B, D, h, w) projected backbone features.
            mask: (B, h, w) bool, True on padding.
            query_embed: (Q, D) learned object queries (used as query positions); with
                ``anchor_queries``, (Q, 4) anchor-box logits instead.
            pos_embed: (B, D, h, w) spatial encodings.
            need_weights: also return the last decoder layer's cross-attention (through the recorder).
            box_head: with ``anchor_queries``: slot states (..., D) -> box deltas (..., 4).

        Returns:
            {"hs": (L, B, Q, D) decoder outputs per layer, "memory": (B, h*w, D) encoder output,
             "cross_attn": (B, Q, h*w) averaged over heads, or None, "boxes": with
             ``anchor_queries`` the refined boxes (L, B, Q, 4), else None}.
        """
        if need_weights:
            with record_attention(self, [self.decoder.layers[-1].multihead_attn], mixed=False) as rec:
                out = self.forward(src, mask, query_embed, pos_embed, box_head=box_head)
            return {**out, "cross_attn": rec.layer(0, "softmax").mean(1)}
        B = src.shape[0]
        src = src.flatten(2).transpose(1, 2)  # (B, T, D)
        pos = pos_embed.flatten(2).transpose(1, 2)
        key_mask = mask.flatten(1)
        memory = self.encoder(src, key_mask, pos)
        if self.anchor_queries:
            if box_head is None:
                raise ValueError("anchor queries need the box head (box_head=...)")
            anchors = query_embed.sigmoid().unsqueeze(0).expand(B, -1, -1)
            tgt = memory.new_zeros(B, query_embed.shape[0], self.d_model)
            hs, boxes = self.decoder(tgt, memory, key_mask, pos, anchors, box_head)
            return {"hs": hs, "memory": memory, "cross_attn": None, "boxes": boxes}
        query_pos = query_embed.unsqueeze(0).expand(B, -1, -1)
        tgt = torch.zeros_like(query_pos)
        hs = self.decoder(tgt, memory, key_mask, pos, query_pos)
        return {"hs": hs, "memory": memory, "cross_attn": None, "boxes": None}
