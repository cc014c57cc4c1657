"""Re-attention (Zhou et al. 2021, "DeepViT: Towards Deeper Vision Transformer", Eq. 4).

Re-attention mixes the H attention maps of a layer with a learnable H x H matrix Theta after the
softmax and normalises the result: ``Re-Attention(Q, K, V) = Norm(Theta^T softmax(Q K^T / sqrt(d))) V``.
Deep ViTs' maps become alike across layers ("attention collapse"); mixing heads regenerates
diverse maps at almost no cost (H^2 parameters per layer).

Two variants are provided (:data:`ReAttnMode`):

``"official"``
    As the DeepViT authors' code: Theta is a 1x1 convolution over the head axis (with bias),
    the norm is a BatchNorm over heads (statistics over batch and both token axes), and the
    result is optionally multiplied by ``head_dim ** -0.5`` (their ``transform_scale``).
``"vit-pytorch"``
    As lucidrains' vit-pytorch: Theta without bias, then a LayerNorm over the head axis (per
    (query, key) position).

Theta starts as the identity (every head keeps its own map, only the norm acts) or random (the
official code's PyTorch default for a 1x1 convolution; vit-pytorch's standard normal).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vitlab.layers.args import ArgError
from vitlab.layers.attention import Attention

ReAttnMode = Literal["official", "vit-pytorch"]
ReAttnInit = Literal["identity", "random"]


class HeadMixing(nn.Module):
    """Theta over heads, then a norm (and an optional scale): (B, H, T, T) -> (B, H, T, T).

    Args:
        num_heads: H.
        mode: ``"official"`` (1x1 conv with bias + BatchNorm2d over heads) or ``"vit-pytorch"``
            (H x H matrix without bias + LayerNorm over heads).
        init: ``"identity"`` or ``"random"`` initial Theta.
        scale: multiply the normalised maps by this factor (1.0: no scaling).
    """

    def __init__(self, num_heads: int, mode: ReAttnMode = "official", init: ReAttnInit = "identity",
                 scale: float = 1.0) -> None:
        super().__init__()
        if mode not in ("official", "vit-pytorch"):
            raise ValueError(f"re-attention mode must be 'official' or 'vit-pytorch', got {mode!r}")
        if init not in ("identity", "random"):
            raise ValueError(f"re-attention init must be 'identity' or 'random', got {init!r}")
        self.num_heads = num_heads
        self.mode = mode
        self.scale = scale
        if mode == "official":
            # Same parameter shapes and names as the authors' `reatten_matrix` / `var_norm`.
            self.theta: nn.Module | nn.Parameter = nn.Conv2d(num_heads, num_heads, kernel_size=1)
            self.norm: nn.Module = nn.BatchNorm2d(num_heads)
        else:
            # theta[h, g]: weight of input head h in output head g (vit-pytorch's einsum 'h g').
            self.theta = nn.Parameter(torch.empty(num_heads, num_heads))
            self.norm = nn.LayerNorm(num_heads)
        self.reset_theta(init)

    @torch.no_grad()
    def reset_theta(self, init: ReAttnInit) -> None:
        """(Re-)initialise Theta: the identity, or the random init of the mode's source code."""
        if isinstance(self.theta, nn.Conv2d):
            if init == "identity":
                eye = torch.eye(self.num_heads, device=self.theta.weight.device, dtype=self.theta.weight.dtype)
                self.theta.weight.copy_(eye[:, :, None, None])
                nn.init.zeros_(self.theta.bias)
            else:
                self.theta.reset_parameters()  # PyTorch's default, as in the official code
        elif init == "identity":
            self.theta.copy_(torch.eye(self.num_heads, device=self.theta.device, dtype=self.theta.dtype))
        else:
            nn.init.normal_(self.theta)  # vit-pytorch: torch.randn(heads, heads)

    def forward(self, attn: torch.Tensor) -> torch.Tensor:
        """attn: (B, H, T, T) softmax maps -> (B, H, T, T) mixed, normalised (not row-stochastic)."""
        if self.mode == "official":
            out = self.norm(self.theta(attn))  # conv over the head (channel) axis
        else:
            out = torch.einsum("bhij,hg->bgij", attn, self.theta)
            out = self.norm(out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # LayerNorm over heads
        return out * self.scale if self.scale != 1.0 else out


class ReAttention(Attention):
    """Multi-head attention whose maps are mixed across heads before they weight the values.

    A subclass of :class:`Attention`, so analysis code finds it by ``isinstance(m, Attention)``
    and it drops into :class:`vitlab.models.vit.VisionTransformer` as its ``attn_layer``. It
    always takes the explicit path (mixing needs the maps), never the fused kernel.

    Two named submodules expose the maps to forward hooks:
      * ``attend`` (the softmax): the maps *before* mixing, (B, H, T, T), rows sum to 1;
      * ``reattend`` (:class:`HeadMixing`): the maps *after* mixing and the norm, (B, H, T, T),
        which are what multiplies the values.
    ``forward_intermediates(return_attn=True)`` and vitlab's capture read ``attend``; hook
    ``reattend`` for the re-generated maps.

    Dropout on the maps (``attn_drop``) is applied after mixing (the official code applies it
    before); the presets use no attention dropout, so the two agree there.

    Args:
        dim, num_heads, qkv_bias, attn_drop, proj_drop, fused: as :class:`Attention` (``fused``
            is accepted for a uniform signature and has no effect).
        mode: ``"official"`` or ``"vit-pytorch"`` (see :class:`HeadMixing`).
        init: ``"identity"`` or ``"random"`` initial Theta.
        scale: the official ``transform_scale``: multiply the mixed maps by ``head_dim ** -0.5``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        fused: bool = True,
        mode: ReAttnMode = "official",
        init: ReAttnInit = "identity",
        scale: bool = False,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, fused=fused)
        self.reattend = HeadMixing(num_heads, mode, init, scale=self.head_dim**-0.5 if scale else 1.0)

    def transform_attn(self, attn: torch.Tensor) -> torch.Tensor:
        """(B, H, T, T) softmax maps -> (B, H, T, T) re-attention maps (Theta, norm, scale)."""
        return self.reattend(attn)


def reattention_layers(
    depth: int,
    last: int | None = None,
    mode: ReAttnMode = "official",
    init: ReAttnInit = "identity",
    scale: bool = False,
) -> list[Callable[..., Attention]]:
    """Per-block attention factories: re-attention in the last ``last`` blocks (None: all).

    ``last`` larger than ``depth`` means every block (so a preset built with fewer blocks, e.g.
    ``depth=2`` in tests, stays valid); 0 means none.
    """
    if last is not None and last < 0:
        raise ValueError(f"the number of re-attention blocks must be >= 0, got {last}")
    k = depth if last is None else min(last, depth)
    reattn = functools.partial(ReAttention, mode=mode, init=init, scale=scale)
    return [Attention] * (depth - k) + [reattn] * k


def num_reattention_params(num_heads: int, mode: ReAttnMode) -> int:
    """Parameters one re-attention layer adds to plain attention: Theta (+ bias) + the norm's affine."""
    return num_heads * num_heads + (3 if mode == "official" else 2) * num_heads


@dataclass(frozen=True)
class ReAttentionArgs:
    """Attention ``"reattention"``: DeepViT's re-attention (see :class:`ReAttention`).

    Args:
        mode: ``"official"`` or ``"vit-pytorch"`` head mixing.
        blocks: re-attention in the last ``blocks`` blocks (plain attention before); None: all.
        init: ``"identity"`` or ``"random"`` initial Theta.
        scale: the official ``transform_scale`` (mixed maps times ``head_dim ** -0.5``).
    """

    mode: ReAttnMode = "official"
    blocks: int | None = None
    init: ReAttnInit = "identity"
    scale: bool = False

    def check(self) -> None:
        if self.blocks is not None and self.blocks < 0:
            raise ArgError("blocks", f"must be >= 0 or null, got {self.blocks}")

    def layers(self, depth: int) -> list[Callable[..., Attention]]:
        """One attention factory per block."""
        return reattention_layers(depth, self.blocks, self.mode, self.init, self.scale)


__all__ = ["HeadMixing", "ReAttention", "ReAttentionArgs", "ReAttnInit", "ReAttnMode", "num_reattention_params",
           "reattention_layers"]
