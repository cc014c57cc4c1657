"""Multihead attention pooling (MAP): a learned query attends over the tokens.

The head of SigLIP and big_vision's ViTs (``pool_type='map'``; Zhai et al. 2022, "Scaling Vision
Transformers", section 3.2; Lee et al. 2019, "Set Transformer", PMA). One latent query (a
parameter) attends over the patch tokens with multi-head cross-attention, then a pre-norm MLP
residual, and the attended query is the pooled feature. Parameter names follow timm's
``AttentionPoolLatent`` (``latent``, ``q``, ``kv``, ``proj``, ``norm``, ``mlp.fc1`` / ``fc2``) so
the converter maps them one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.layers.mlp import Activation, Mlp


class AttentionPool(nn.Module):
    """Pool (B, N, D) tokens into (B, D) with a learned query.

    Args:
        dim: token width D.
        num_heads: heads H of the cross-attention; D divisible by H.
        mlp_dim: hidden width of the MLP after the attention.
        norm_eps: eps of the LayerNorm before the MLP.
        act: the MLP's activation.
        qkv_bias: bias on the q and kv projections.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_dim: int, norm_eps: float = 1e-6, act: Activation = "gelu",
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_dim, act=act)
        nn.init.trunc_normal_(self.latent, std=dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D) tokens -> (B, D) pooled feature."""
        B, N, D = x.shape
        q = self.q(self.latent.expand(B, -1, -1)).reshape(B, 1, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, 1, hd)
        out = self.proj(out.transpose(1, 2).reshape(B, 1, D))
        out = out + self.mlp(self.norm(out))
        return out[:, 0]
