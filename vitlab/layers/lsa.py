"""Locality Self-Attention (Lee et al. 2021, "Vision Transformer for Small-Size Datasets", Sec. 3.2).

Two changes to the logits of multi-head self-attention, both aimed at the too-flat attention maps
of ViTs trained on small data:

- *diagonal masking*: a token's logit for itself is set to -inf, so the softmax spreads the weight
  over the other tokens only (the self-token's weight is exactly 0; the residual path already
  carries the token itself);
- *learnable temperature*: the fixed 1 / sqrt(d) is replaced by a learned scale per head,
  initialised to 1 / sqrt(d) as in the authors' code (aanna0701/SPT_LSA_ViT, ``self.scale =
  nn.Parameter(scale * torch.ones(heads))``), which lets each head sharpen its maps.

Either can be switched off (the paper's ablation). Both paths of :class:`Attention` are kept: the
fused kernel gets q pre-multiplied by the temperature, ``scale=1`` and a boolean mask.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.layers.attention import Attention, AttnFactory


class LocalitySelfAttention(Attention):
    """Multi-head self-attention with a masked diagonal and a learned per-head temperature.

    Args:
        dim, num_heads, qkv_bias, attn_drop, proj_drop, fused: as :class:`Attention`.
        mask_diagonal: set every token's logit for itself to -inf (needs at least 2 tokens).
        learn_temperature: learn the logit scale per head (``temperature``, shape (H,));
            False keeps the fixed 1 / sqrt(head_dim).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, fused: bool = True, mask_diagonal: bool = True,
                 learn_temperature: bool = True) -> None:
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, fused=fused)
        self.mask_diagonal = mask_diagonal
        # A 1-D parameter: the optimizer's ndim rule keeps it out of weight decay, as a scale should be.
        self.temperature = nn.Parameter(torch.full((num_heads,), self.scale), requires_grad=learn_temperature)

    def _scaled_q(self, q: torch.Tensor) -> torch.Tensor:
        """(B, H, T, hd) -> q times each head's temperature."""
        return q * self.temperature.to(q.dtype).view(1, -1, 1, 1)

    def _allowed(self, q: torch.Tensor) -> torch.Tensor | None:
        """(T, T) boolean mask of the logits that take part (False on the diagonal), or None."""
        if not self.mask_diagonal:
            return None
        T = q.shape[-2]
        if T < 2:
            raise ValueError("locality self-attention masks each token's own logit: it needs at least 2 tokens")
        return ~torch.eye(T, dtype=torch.bool, device=q.device)

    def logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """q, k: (B, H, T, hd) -> (B, H, T, T) logits, temperature-scaled, -inf on the diagonal."""
        out = self._scaled_q(q) @ k.transpose(-2, -1)
        allowed = self._allowed(q)
        return out if allowed is None else out.masked_fill(~allowed, float("-inf"))

    def fused_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
        """q, k, v: (B, H, T, hd) -> (B, H, T, hd): the same function through the fused kernel."""
        allowed = self._allowed(q)
        # An additive float mask: on the CPU the kernel ran ~10% faster with it than with the boolean one.
        mask = None if allowed is None else torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(
            ~allowed, float("-inf"))
        return F.scaled_dot_product_attention(self._scaled_q(q), k, v, attn_mask=mask, dropout_p=dropout_p, scale=1.0)


@dataclass(frozen=True)
class LsaArgs:
    """Attention ``"lsa"``: :class:`LocalitySelfAttention` in every block; each part can be switched off."""

    mask_diagonal: bool = True
    learn_temperature: bool = True

    def check(self) -> None:
        """Any combination is valid (both off is plain multi-head self-attention)."""

    def layers(self, depth: int) -> list[AttnFactory]:
        """One attention factory per block."""
        make = functools.partial(LocalitySelfAttention, mask_diagonal=self.mask_diagonal,
                                 learn_temperature=self.learn_temperature)
        return [make] * depth
