"""The explicit attention path without keeping its maps: recomputed in the backward, for bf16 CPU training.

The CPU flash-attention kernel's bf16 backward is slow (~10x its fp32 time at ViT token counts,
torch 2.14: :func:`vitlab.layers.attention._fused_backward_is_slow`), so bf16 training steps on
the CPU run the explicit path (``softmax(q k^T) v`` as separate bf16 matmuls and an fp32
softmax), which is fast both ways but keeps each layer's (B, H, T, T) probabilities for the
backward, 6 bytes an entry (fp32 for the softmax's gradient, bf16 for the product with v): for
ViT-S/16 at batch 32 that is ~45 MiB a layer, and the step peaked far above timm's fused one.
:class:`RecomputedAttention` computes the same operations, forward and backward, bit for bit
(tests/test_recomputed_attention.py), but keeps only q, k and v and recomputes the probabilities
in the backward, a slice of the batch at a time: recomputation as in flash attention (Dao et al.
2022) and activation checkpointing, at the cost of one more product and softmax per layer.
"""

from __future__ import annotations

from typing import Any

import torch

# Entries of one slice's (b, H, T, T) maps: ~16 bytes each are live at once (bf16 logits and
# probabilities, fp32 probabilities and their gradient), ~64 MiB whatever the batch.
_SLICE_ENTRIES = 4 * 2**20


def _slices(q: torch.Tensor) -> list[slice]:
    B, H, T, _ = q.shape
    step = max(1, _SLICE_ENTRIES // (H * T * T))
    return [slice(b, b + step) for b in range(0, B, step)]


def _probabilities(qs: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """The explicit path's maps: (q * scale) k^T in the inputs' dtype, softmax in fp32. (b, H, T, T)."""
    return torch.softmax((qs @ ks.transpose(-2, -1)).float(), dim=-1)


class RecomputedAttention(torch.autograd.Function):
    """q, k, v: (B, H, T, hd), bf16 or fp16 -> softmax((q * scale) k^T) v, (B, H, T, hd). No dropout.

    Per slice of the batch, forward: L = (q * scale) k^T, P = softmax(fp32(L)), O = bf16(P) V.
    Backward, recomputing P: dV = bf16(P)^T dO, dP = dO V^T, dL = softmax'(P, dP) (autograd's own
    kernel), dQ = (dL K) * scale, dK = dL^T (q * scale); products in the inputs' dtype (the bf16
    units), the softmax and its gradient in fp32, as on the explicit path.
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        for s in _slices(q):
            out[s] = _probabilities(q[s].contiguous() * scale, k[s].contiguous()).to(q.dtype) @ v[s].contiguous()
        ctx.save_for_backward(q, k, v)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        q, k, v = ctx.saved_tensors
        scale = ctx.scale
        dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
        grad_out = grad_out.to(q.dtype)  # once, not per slice
        with torch.autocast(q.device.type, enabled=False):
            for s in _slices(q):
                qs = q[s].contiguous() * scale
                ks, vs, gs = (t[s].contiguous() for t in (k, v, grad_out))
                p = _probabilities(qs, ks)
                dp = (gs @ vs.transpose(-2, -1)).float()
                dl = torch._softmax_backward_data(dp, p, -1, p.dtype).to(q.dtype)  # autograd's softmax gradient
                dv[s] = p.to(q.dtype).transpose(-2, -1) @ gs
                dq[s] = (dl @ ks) * scale
                dk[s] = dl.transpose(-2, -1) @ qs
        return dq, dk, dv, None
