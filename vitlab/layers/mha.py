"""``nn.MultiheadAttention`` made recordable: DETR's attention, with the same parameters and numerics.

:class:`MultiheadAttention` keeps PyTorch's parameter names (``in_proj_weight``, ``in_proj_bias``,
``out_proj``), so DETR checkpoints load unchanged, and runs PyTorch's own forward unless someone
records its maps. Then it takes an explicit path whose probabilities pass through ``attend`` (a
softmax over the keys, (B, H, Tq, Tk)), where :mod:`vitlab.layers.recorder` reads them; the
outputs agree with PyTorch's to float rounding (~1e-7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.layers.attention_base import AttentionBase


class MultiheadAttention(nn.MultiheadAttention, AttentionBase):
    """Batch-first multi-head attention (Vaswani et al. 2017) with recordable probabilities.

    Args:
        embed_dim: token width D (queries, keys and values alike).
        num_heads: heads H; D must be divisible by H.
        dropout: dropout on the attention probabilities.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.attend = nn.Softmax(dim=-1)  # named so the recorder can read the (B, H, Tq, Tk) probabilities

    def forward(  # type: ignore[override]
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        average_attn_weights: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """query (B, Tq, D), key / value (B, Tk, D), key_padding_mask (B, Tk) bool (True: ignore).

        Returns:
            (output (B, Tq, D), weights: (B, Tq, Tk) head-averaged or (B, H, Tq, Tk), or None
            unless ``need_weights``).
        """
        if not self.wants_maps():
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   average_attn_weights=average_attn_weights)
        return self._explicit(query, key, value, key_padding_mask, need_weights, average_attn_weights)

    def _explicit(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask: torch.Tensor | None,
                  need_weights: bool, average: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """PyTorch's ``multi_head_attention_forward`` step by step, the softmax through ``attend``."""
        B, Tq, D = query.shape
        H, hd = self.num_heads, D // self.num_heads
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        q = F.linear(query, w_q, b_q).view(B, Tq, H, hd).transpose(1, 2)  # (B, H, Tq, hd)
        k = F.linear(key, w_k, b_k).view(B, -1, H, hd).transpose(1, 2)  # (B, H, Tk, hd)
        v = F.linear(value, w_v, b_v).view(B, -1, H, hd).transpose(1, 2)
        logits = (q * hd**-0.5) @ k.transpose(-2, -1)  # (B, H, Tq, Tk)
        if key_padding_mask is not None:
            logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        attn = self.attend(logits)
        dropped = F.dropout(attn, p=self.dropout, training=self.training)
        out = (dropped @ v).transpose(1, 2).reshape(B, Tq, D)
        out = self.out_proj(out)
        if not need_weights:
            return out, None
        return out, attn.mean(1) if average else attn


__all__ = ["MultiheadAttention"]
