"""The one attention recorder: every :class:`AttentionBase` layer's probabilities, by forward hooks.

Used by ``VisionTransformer.forward_intermediates(return_attn=True)``, DETR's ``return_attn``, the
analyses (:func:`vitlab.analysis.capture_attention`) and the collapse study::

    with record_attention(model) as rec:       # every attention layer, found by base class
        model(x)
    rec.names                                  # qualified module names, forward (registration) order
    rec.layer(0)                               # (B, H, Tq, Tk) maps of layer 0, rows sum to 1

Two maps are read per layer:

* ``softmax``: the output of the layer's ``attend`` submodule, (B, H, Tq, Tk); each row (one
  query) is a distribution over the keys (masked keys get 0). Self-attention has Tq = Tk = T.
  Hooking ``attend`` is what switches a layer to its explicit path.
* ``mixed``: for layers whose :meth:`AttentionBase.mixed_maps_source` names one (re-attention mixes
  the heads), the maps that actually weight the values, same shape, rows not normalised. ``None``
  for the others.

Maps are detached, not copied (``to_cpu`` moves them as they come). Leaving the block removes every
hook, so plain forwards take the fused path again at full speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from vitlab.errors import ConfigError
from vitlab.layers.attention_base import AttentionBase

Which = Literal["effective", "softmax", "mixed"]


def find_attention(model: nn.Module) -> list[tuple[str, AttentionBase]]:
    """(qualified name, module) of every attention layer of ``model``, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AttentionBase)]


class AttentionRecorder:
    """Records the maps of the given layers while used as a context manager (see module docstring).

    Args:
        layers: (name, layer) pairs to record, e.g. from :func:`find_attention`.
        to_cpu: move each map to the CPU as it is captured (long runs on an accelerator).
        mixed: also record the post-mixing maps of layers that have them.
    """

    def __init__(self, layers: Sequence[tuple[str, AttentionBase]], to_cpu: bool = False, mixed: bool = True) -> None:
        self.names = [n for n, _ in layers]
        self.modules = [m for _, m in layers]
        self.num_heads = [m.num_heads for m in self.modules]
        self.softmax: list[list[torch.Tensor]] = [[] for _ in layers]  # per layer: one (B, H, Tq, Tk) per forward
        self.mixed: list[list[torch.Tensor] | None] = [
            [] if mixed and m.mixed_maps_source() is not None else None for m in self.modules]
        self.to_cpu = to_cpu
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _keep(self, store: list[torch.Tensor], t: torch.Tensor) -> None:
        t = t.detach()
        store.append(t.to("cpu") if self.to_cpu else t)

    def __enter__(self) -> AttentionRecorder:
        for module, soft, mixed in zip(self.modules, self.softmax, self.mixed):
            self._handles.append(module.attend.register_forward_hook(lambda m, a, out, s=soft: self._keep(s, out)))
            source = module.mixed_maps_source()
            if mixed is None or source is None:
                continue
            sub, where = source
            if where == "output":
                self._handles.append(sub.register_forward_hook(lambda m, a, out, s=mixed: self._keep(s, out)))
            else:
                self._handles.append(sub.register_forward_pre_hook(lambda m, a, s=mixed: self._keep(s, a[0])))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _cat(self, chunks: list[torch.Tensor], name: str) -> torch.Tensor:
        if not chunks:
            raise ConfigError(f"attention layer {name}: nothing captured (was the model run inside the block?)")
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks, 0)

    def layer(self, index: int, which: Which = "effective") -> torch.Tensor:
        """(B, H, Tq, Tk) maps of layer ``index`` over all forwards since the last :meth:`clear`.

        ``effective``: the mixed maps where the layer has them, else the softmax maps.
        """
        mixed = self.mixed[index]
        if which == "mixed" and mixed is None:
            raise ConfigError(f"attention layer {self.names[index]} does not transform its maps")
        if which == "softmax" or mixed is None:
            return self._cat(self.softmax[index], self.names[index])
        return self._cat(mixed, self.names[index])

    def maps(self, which: Which = "effective") -> list[torch.Tensor]:
        """Per layer (B, H, Tq, Tk) maps of the kind asked for."""
        return [self.layer(i, which) for i in range(len(self.names))]

    def effective(self) -> list[torch.Tensor]:
        """Per layer (B, H, Tq, Tk): post-mixing maps where a layer mixes them, else the softmax maps."""
        return self.maps("effective")

    def clear(self) -> None:
        """Forget what was captured (call between batches to bound memory)."""
        for chunks in [*self.softmax, *self.mixed]:
            if chunks is not None:
                chunks.clear()

    def __len__(self) -> int:
        return len(self.names)


def record_attention(
    model: nn.Module,
    layers: Sequence[AttentionBase] | None = None,
    to_cpu: bool = False,
    mixed: bool = True,
) -> AttentionRecorder:
    """A recorder (use it as ``with``) for ``layers`` of ``model``; None: every attention layer.

    Raises:
        ConfigError: the model has no attention layer, or a given layer is not part of it.
    """
    found = find_attention(model)
    if layers is not None:
        names = {id(m): n for n, m in found}
        missing = [type(m).__name__ for m in layers if id(m) not in names]
        if missing:
            raise ConfigError(f"attention layer(s) {', '.join(missing)} are not vitlab attention layers of the model")
        found = [(names[id(m)], m) for m in layers]
    if not found:
        raise ConfigError(f"{type(model).__name__} has no vitlab attention layers to record")
    return AttentionRecorder(found, to_cpu=to_cpu, mixed=mixed)


__all__ = ["AttentionRecorder", "Which", "find_attention", "record_attention"]
