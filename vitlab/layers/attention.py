"""Multi-head self-attention with a fused path and a hookable explicit path.

By default attention runs through ``F.scaled_dot_product_attention`` (fused kernels, no T x T
matrix kept). When anyone needs the attention probabilities, the explicit path computes
``softmax(q k^T / sqrt(d))`` in the named submodule :attr:`Attention.attend`, whose output a
forward hook can read. The explicit path is taken automatically when a hook is registered on
``attend`` (this is how the one recorder, :mod:`vitlab.layers.recorder`, captures maps for
``forward_intermediates(return_attn=True)`` and :mod:`vitlab.analysis`), or always when
``fused`` is False. Both paths compute the same function. A bf16 training step on the CPU, where
the fused kernel's backward is slow (:func:`_fused_backward_is_slow`), runs the explicit path's
operations instead: as they are where the maps are small, and through
:mod:`vitlab.layers.recomputed_attention` (nothing T x T kept for the backward) where they are
large (:meth:`Attention.attention_path`).

Subclasses (DeepViT's re-attention) change what happens to the probabilities by overriding
:meth:`Attention.transform_attn`; they are still found by ``isinstance(m, Attention)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.layers.attention_base import AttentionBase, MapsSource
from vitlab.layers.recomputed_attention import RecomputedAttention

MIXING_SUBMODULES = ("reattend", "reattn")  # names under which a layer may expose its head mixing
# bf16 CPU training recomputes the maps rather than keep them above this size a layer (6 bytes an
# entry: ViT-S/16 at batch 32 ~45 MiB): measured on the AMD EPYC host (benchmarks/attention_path.py),
# recomputing cost ViT-S/16 0-2% of its step and the small recipes' ViTs (under 10 MiB at batch
# 128) 6-8%, for memory they do not need.
RECOMPUTE_ABOVE_BYTES = 16 * 2**20


class _SplitHeads(torch.autograd.Function):
    """(B, T, 3 * H * hd) -> q, k, v, each a (B, H, T, hd) view; the backward fills one buffer.

    The same views as ``reshape -> permute -> unbind``; only the backward differs: autograd's
    would stack the three gradients (a copy) and then copy again to make the permuted stack
    contiguous for the ``qkv`` projection's backward. Here each gradient is written once into
    its slot of a (B, T, 3, H, hd) buffer: one pass instead of two, the same values bit for bit
    (measured ~1.19x on the attention's forward + backward for the CIFAR ViT, ~1.06x for ViT-S/16).
    """

    @staticmethod
    def forward(ctx: Any, qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = qkv.shape
        ctx.dims = (B, T, num_heads, C // (3 * num_heads))
        q, k, v = qkv.reshape(B, T, 3, num_heads, C // (3 * num_heads)).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None]:
        B, T, H, hd = ctx.dims
        out = grads[0].new_empty(B, T, 3, H, hd)
        for i, g in enumerate(grads):  # (B, H, T, hd) each, written as (B, T, H, hd) into slot i
            out[:, :, i].copy_(g.transpose(1, 2))
        return out.view(B, T, 3 * H * hd), None


class Attention(AttentionBase):
    """Multi-head self-attention (ViT paper, Eq. 5-7 of appendix A).

    Args:
        dim: token width D.
        num_heads: number of heads H; D must be divisible by H.
        qkv_bias: bias on the q, k, v projections (the ViT paper uses one).
        attn_drop: dropout on the attention probabilities.
        proj_drop: dropout after the output projection.
        fused: use ``scaled_dot_product_attention`` when no maps are requested.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused = fused
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attend = nn.Softmax(dim=-1)  # named so hooks can read the (B, H, T, T) probabilities
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def wants_maps(self) -> bool:
        """True when the explicit path must run: fused is off or a hook watches ``attend``."""
        return not self.fused or super().wants_maps()

    def mixed_maps_source(self) -> MapsSource | None:
        """Subclasses that transform the maps: the mixing submodule's output, else ``attn_drop``'s input.

        ``attn_drop`` receives ``transform_attn(softmax)`` on the explicit path, so it sees the
        transformed maps of any subclass; a ``reattend`` / ``reattn`` submodule is read directly.
        """
        mixer = next((getattr(self, n) for n in MIXING_SUBMODULES if isinstance(getattr(self, n, None), nn.Module)),
                     None)
        if mixer is not None:
            return mixer, "output"
        if type(self).transform_attn is not Attention.transform_attn:
            return self.attn_drop, "input"
        return None

    def transform_attn(self, attn: torch.Tensor) -> torch.Tensor:
        """Hook point for subclasses: (B, H, T, T) probabilities -> (B, H, T, T). Identity here."""
        return attn

    def logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """q, k: (B, H, T, hd) -> the (B, H, T, T) logits the explicit path's softmax ``attend`` takes.

        Subclasses that change the logits (a learned temperature, a mask) override this together
        with :meth:`fused_attention`, so both paths keep computing the same function.
        """
        return (q * self.scale) @ k.transpose(-2, -1)

    def fused_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
        """q, k, v: (B, H, T, hd) -> softmax(logits) v, (B, H, T, hd), in one fused kernel."""
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)

    def attention_path(self, x: torch.Tensor) -> str:
        """Which computation ``forward(x)`` runs: "fused", "explicit" or "recomputed" (same function).

        "explicit" when the maps are wanted or a subclass transforms them; "fused" unless a bf16
        training step runs on the CPU, where the fused kernel's backward is slow
        (:func:`_fused_backward_is_slow`). There plain attention (no subclass logits, no dropout
        on the maps) whose maps would keep more than :data:`RECOMPUTE_ABOVE_BYTES` a layer runs
        the explicit path's operations without keeping them (:class:`RecomputedAttention`), and
        the rest the explicit path, the faster of the two when the maps are small.
        """
        if self.wants_maps() or type(self).transform_attn is not Attention.transform_attn:
            return "explicit"
        if not _fused_backward_is_slow(x, self.training):
            return "fused"
        B, T, _ = x.shape
        plain = type(self).logits is Attention.logits and self.attn_drop.p == 0
        return "recomputed" if plain and 6 * B * self.num_heads * T * T > RECOMPUTE_ABOVE_BYTES else "explicit"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        B, T, D = x.shape
        path = self.attention_path(x)
        if path != "fused":
            qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            # One copy makes q, k, v contiguous: batched matmuls on the permuted views are ~1.35x
            # slower on the CPU (measured), which made capturing the maps cost more than it must.
            q, k, v = qkv.contiguous().unbind(0)  # each (B, H, T, hd)
        if path == "recomputed":
            out = RecomputedAttention.apply(q, k, v, self.scale)
        elif path == "explicit":
            logits = self.logits(q, k)  # (B, H, T, T)
            # bf16 / fp16 logits go through the softmax in fp32, as CUDA autocast and the fused kernel
            # run it (CPU autocast would keep their 8-bit mantissa), then back for the product with v;
            # fp32 and fp64 pass unchanged.
            attn = self.attend(logits.to(torch.promote_types(logits.dtype, torch.float32))).to(logits.dtype)
            attn = self.attn_drop(self.transform_attn(attn))
            out = attn @ v
        else:
            qkv = self.qkv(x)  # (B, T, 3 * D)
            if self.training and torch.is_grad_enabled():  # training: the one-pass backward of the split
                q, k, v = _SplitHeads.apply(qkv, self.num_heads)
            else:  # inference and export: plain views, no custom autograd node
                q, k, v = qkv.reshape(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            out = self.fused_attention(q, k, v, self.attn_drop.p if self.training else 0.0)
        out = out.transpose(1, 2).reshape(B, T, D)  # (B, T, H * hd)
        return self.proj_drop(self.proj(out))


def _fused_backward_is_slow(x: torch.Tensor, training: bool) -> bool:
    """True when a bf16 training step runs on the CPU: there the fused kernel's backward is the slow one.

    The step then runs the explicit path's operations, kept or recomputed
    (:meth:`Attention.attention_path`).

    The CPU flash-attention kernel's bf16 backward runs ~10x its own fp32 time at ViT token
    counts (torch 2.14, 2 AMX cores: 48 against 4.5 ms a call for the CIFAR recipe's 64 tokens),
    while the explicit path's batched matmuls use the bf16 units. Measured on training steps
    (forward + backward, bf16 autocast, before its softmax moved to fp32, which costs 5-11%):
    the explicit path ran 1.9-2.4x the fused one for the CIFAR recipe's ViT, 2.2-2.4x for the
    MNIST recipe's and 1.2-1.6x for ViT-S/16 at 224, and so makes bf16 training faster than fp32
    where it was slower (docs/benchmarks.md). On an AMD EPYC host with avx512_bf16 and no AMX
    (2026-12-02, batch 64, median of 7 rounds) the same held: the fused bf16 step ran 0.93x / 0.86x
    the fp32 one (CIFAR / MNIST recipe's ViT) in two runs 0.93x / 0.73-0.86x, the explicit bf16
    step 1.66-1.69x / 1.46-1.79x (benchmarks/attention_path.py). Both paths
    compute the same function; inference keeps the fused kernel (its bf16 forward is not slow).
    """
    if not (training and torch.is_grad_enabled() and x.device.type == "cpu"):
        return False
    autocast_bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return autocast_bf16 or x.dtype == torch.bfloat16


AttnFactory = Callable[..., Attention]  # (dim, num_heads, qkv_bias=, attn_drop=, proj_drop=) -> Attention


@dataclass(frozen=True)
class MhsaArgs:
    """Attention ``"mhsa"``: plain multi-head self-attention in every block; no arguments."""

    def check(self) -> None:
        """Nothing to check."""

    def layers(self, depth: int) -> list[AttnFactory]:
        """One attention factory per block."""
        return [Attention] * depth
