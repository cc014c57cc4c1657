"""Attention capture: every attention layer's probabilities, per layer and head, by forward hooks.

Attention layers are found by base class (``isinstance(m, vitlab.layers.Attention)``), so subclasses
such as DeepViT's ReAttention are captured too. Two maps are read per layer:

* ``softmax``: the output of the layer's ``attend`` submodule, ``softmax(q k^T / sqrt(d))``
  (B, H, T, T). Hooking ``attend`` is what switches the layer to its explicit path.
* ``mixed``: for layers whose class overrides :meth:`Attention.transform_attn` (re-attention mixes
  the heads), the maps actually multiplied with the values. They are read from the output of a
  submodule named ``reattn`` when the layer has one, else from the input of the layer's
  ``attn_drop`` (which receives ``transform_attn(softmax)`` on the explicit path). ``None`` for
  layers that do not transform their maps.

Map-shaped analyses (maps, collapse) use :meth:`CapturedAttention.effective` by default:
``mixed`` where present, else ``softmax``; probability analyses (rollout, distance, entropy)
always use ``softmax``. When the context exits every hook is removed, so plain forwards take the fused SDPA
path again at full speed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from vitlab.errors import ConfigError
from vitlab.layers import Attention

Which = Literal["effective", "softmax", "mixed"]
MIXING_SUBMODULES = ("reattend", "reattn")  # names under which a layer may expose its head mixing


def find_attention(model: nn.Module) -> list[tuple[str, Attention]]:
    """(qualified name, module) of every attention layer, in forward (registration) order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Attention)]


def transforms_maps(module: Attention) -> bool:
    """Whether the layer's class changes its probabilities after the softmax (e.g. ReAttention)."""
    overrides = type(module).transform_attn is not Attention.transform_attn
    return overrides or any(isinstance(getattr(module, n, None), nn.Module) for n in MIXING_SUBMODULES)


@dataclass
class CapturedAttention:
    """Maps of the last forward(s) inside an :func:`capture_attention` block, one entry per layer."""

    names: list[str]
    num_heads: list[int]
    softmax: list[list[torch.Tensor]] = field(default_factory=list)  # per layer: (B, H, T, T) per forward
    mixed: list[list[torch.Tensor] | None] = field(default_factory=list)

    def _cat(self, chunks: list[torch.Tensor], name: str) -> torch.Tensor:
        if not chunks:
            raise ConfigError(f"attention layer {name}: nothing captured (was the model run inside the block?)")
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks, 0)

    def layer(self, index: int, which: Which = "effective") -> torch.Tensor:
        """(B, H, T, T) maps of layer ``index`` over all forwards since the last :meth:`clear`."""
        mixed = self.mixed[index]
        if which == "mixed" and mixed is None:
            raise ConfigError(f"attention layer {self.names[index]} does not transform its maps")
        if which == "softmax" or mixed is None:
            return self._cat(self.softmax[index], self.names[index])
        return self._cat(mixed, self.names[index])

    def effective(self) -> list[torch.Tensor]:
        """Per layer (B, H, T, T): post-mixing maps where a layer mixes them, else the softmax maps."""
        return [self.layer(i, "effective") for i in range(len(self.names))]

    def maps(self, which: Which = "effective") -> list[torch.Tensor]:
        """Per layer (B, H, T, T) maps of the kind asked for."""
        return [self.layer(i, which) for i in range(len(self.names))]

    def clear(self) -> None:
        """Forget what was captured (call between batches to bound memory)."""
        for chunks in self.softmax:
            chunks.clear()
        for chunks in self.mixed:
            if chunks is not None:
                chunks.clear()

    def __len__(self) -> int:
        return len(self.names)


@contextmanager
def capture_attention(model: nn.Module, to_cpu: bool = False) -> Iterator[CapturedAttention]:
    """Record the attention maps of every forward of ``model`` run inside the ``with`` block.

    Args:
        model: any module holding :class:`vitlab.layers.Attention` layers (a VisionTransformer, a
            DeepViT, a converted model).
        to_cpu: move each map to the CPU as it is captured (long runs on an accelerator).

    Yields:
        :class:`CapturedAttention`; its lists fill as forwards run. Maps are detached and not
        copied (on the same device), so capturing adds little to the forward's cost.

    Raises:
        ConfigError: the model has no vitlab attention layer.
    """
    layers = find_attention(model)
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no vitlab attention layers to capture")
    cap = CapturedAttention(names=[n for n, _ in layers], num_heads=[m.num_heads for _, m in layers])
    handles = []

    def keep(store: list[torch.Tensor], t: torch.Tensor) -> None:
        t = t.detach()
        store.append(t.to("cpu") if to_cpu else t)

    for _, module in layers:
        soft: list[torch.Tensor] = []
        cap.softmax.append(soft)
        handles.append(module.attend.register_forward_hook(lambda m, a, out, s=soft: keep(s, out)))
        if not transforms_maps(module):
            cap.mixed.append(None)
            continue
        mixed: list[torch.Tensor] = []
        cap.mixed.append(mixed)
        reattn = next((getattr(module, n) for n in MIXING_SUBMODULES
                       if isinstance(getattr(module, n, None), nn.Module)), None)
        if reattn is not None:
            handles.append(reattn.register_forward_hook(lambda m, a, out, s=mixed: keep(s, out)))
        else:
            handles.append(module.attn_drop.register_forward_pre_hook(lambda m, a, s=mixed: keep(s, a[0])))
    try:
        yield cap
    finally:
        for h in handles:
            h.remove()
