"""The name -> layer tables of the ViT: token stems and attention variants.

Each entry maps a name to the frozen dataclass of that layer's typed arguments. A stem's arguments
give ``check(patch_size)`` and ``layer() -> (img_size, patch_size, in_chans, embed_dim) -> TokenEmbed``;
an attention variant's give ``check()`` and ``layers(depth)``, one attention factory per block.
A new variant is one layer file (the layer and its arguments dataclass) plus one line here; the
ViT's config then takes it as ``stem="name", stem_args={...}`` or ``attn="name", attn_args={...}``.
"""

from __future__ import annotations

from typing import Protocol

from vitlab.layers.args import LayerTable
from vitlab.layers.attention import AttnFactory, MhsaArgs
from vitlab.layers.cnn_embed import CnnStemArgs
from vitlab.layers.lsa import LsaArgs
from vitlab.layers.patch_embed import ConvStemArgs, EmbedFactory, PatchStemArgs
from vitlab.layers.reattention import ReAttentionArgs
from vitlab.layers.resnet_stem import ResNetV2StemArgs
from vitlab.layers.spt_embed import ShiftedPatchStemArgs


class StemArgs(Protocol):
    def check(self, patch_size: int) -> None:
        """Raise :class:`vitlab.layers.args.ArgError` when the stem cannot give patch_size-sized tokens."""

    def layer(self) -> EmbedFactory:
        """The embed-layer factory ``(img_size, patch_size, in_chans, embed_dim) -> TokenEmbed``."""


class AttnArgs(Protocol):
    def check(self) -> None:
        """Raise :class:`vitlab.layers.args.ArgError` for invalid arguments."""

    def layers(self, depth: int) -> list[AttnFactory]:
        """Per-block factories ``(dim, num_heads, qkv_bias=, attn_drop=, proj_drop=) -> Attention``."""


STEMS: LayerTable[StemArgs] = LayerTable("stem", {
    "patch": PatchStemArgs,  # ViT paper: linear projection of P x P patches
    "conv": ConvStemArgs,  # Xiao et al. 2021: stride-2 3x3 convs
    "cnn": CnnStemArgs,  # DeepViT-S / -L: 7x7 + 3x3 front end, (P/2) projection
    "resnetv2": ResNetV2StemArgs,  # ViT paper's hybrid: BiT ResNetV2 feature map
    "spt": ShiftedPatchStemArgs,  # Lee et al. 2021: shifted patch tokenization
})

ATTENTIONS: LayerTable[AttnArgs] = LayerTable("attn", {
    "mhsa": MhsaArgs,  # multi-head self-attention
    "reattention": ReAttentionArgs,  # DeepViT: heads mixed after the softmax
    "lsa": LsaArgs,  # Lee et al. 2021: locality self-attention (masked diagonal, learned temperature)
})

__all__ = ["ATTENTIONS", "STEMS", "AttnArgs", "StemArgs"]
