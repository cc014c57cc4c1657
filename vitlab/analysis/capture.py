"""Attention capture for the analyses: the one recorder of :mod:`vitlab.layers.recorder`.

Layers are found by base class (:class:`vitlab.layers.attention_base.AttentionBase`), so DeepViT's
ReAttention and DETR's attention are captured too. Two maps are read per layer (see the recorder):
``softmax`` (B, H, Tq, Tk), the output of the layer's ``attend``; and ``mixed``, the maps that weight
the values where a layer transforms them (re-attention), else ``None``.

Map-shaped analyses (maps, collapse) use :meth:`CapturedAttention.effective` by default:
``mixed`` where present, else ``softmax``; probability analyses (rollout, distance, entropy)
always use ``softmax``. When the context exits every hook is removed, so plain forwards take the
fused SDPA path again at full speed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from vitlab.layers.recorder import AttentionRecorder, Which, find_attention, record_attention

CapturedAttention = AttentionRecorder  # the analyses' name for the recorder


@contextmanager
def capture_attention(model: nn.Module, to_cpu: bool = False) -> Iterator[AttentionRecorder]:
    """Record the attention maps of every forward of ``model`` run inside the ``with`` block.

    Args:
        model: any module holding vitlab attention layers (a ViT, a DeepViT, a converted model, a DETR).
        to_cpu: move each map to the CPU as it is captured (long runs on an accelerator).

    Yields:
        :class:`AttentionRecorder`; its lists fill as forwards run.

    Raises:
        ConfigError: the model has no vitlab attention layer.
    """
    with record_attention(model, to_cpu=to_cpu) as rec:
        yield rec


__all__ = ["CapturedAttention", "Which", "capture_attention", "find_attention"]
