"""Attention entropy per head: how spread out each query's attention is (nats).

0 when every query attends to one token; ``log T`` when it attends uniformly to all T tokens.
Every query and key counts, prefix tokens (class, registers) included: entropy is about how a
row spreads, not about the image, so nothing is sliced away.
"""

from __future__ import annotations

import torch


def attention_entropy(attn: torch.Tensor) -> torch.Tensor:
    """(B, H, T, T) probabilities -> (B, H): ``-sum_j A[i, j] log A[i, j]`` averaged over all queries i."""
    a = attn if attn.dtype in (torch.float32, torch.float64) else attn.float()
    ent = -torch.special.xlogy(a, a).sum(dim=-1)  # 0 log 0 = 0
    return ent.mean(dim=-1)
