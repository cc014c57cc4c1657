"""The base class of every vitlab attention layer: what the one attention recorder relies on.

A subclass exposes its attention probabilities as the output of a submodule named ``attend``
(a softmax over the keys, (B, H, Tq, Tk), rows summing to 1) and takes the explicit path that runs
``attend`` whenever a hook watches it (:meth:`AttentionBase.wants_maps`); otherwise it may use a
fused kernel that never forms the maps. :mod:`vitlab.layers.recorder` finds layers by this class,
so the ViT's :class:`~vitlab.layers.attention.Attention`, DeepViT's ReAttention and DETR's
:class:`~vitlab.layers.mha.MultiheadAttention` are all recorded the same way.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

MapsSource = tuple[nn.Module, Literal["output", "input"]]


class AttentionBase(nn.Module):
    """Mixin-style base (no ``__init__``): subclasses set ``num_heads`` and an ``attend`` submodule."""

    num_heads: int
    attend: nn.Module

    def wants_maps(self) -> bool:
        """True when a hook watches ``attend``: the layer must then form the maps explicitly."""
        return bool(self.attend._forward_hooks) or bool(self.attend._forward_pre_hooks)

    def mixed_maps_source(self) -> MapsSource | None:
        """Where the maps that weight the values can be read when they differ from ``attend``'s output.

        ``(module, "output")`` or ``(module, "input")``; None (the default) when the softmax maps are
        the ones used (plain attention).
        """
        return None
