"""Building blocks with explicit arguments; models assemble them.

Token stems and attention variants are looked up by name in :mod:`vitlab.layers.tables`; every
attention layer derives from :class:`AttentionBase`, and :func:`record_attention` (the one recorder)
reads their probabilities.
"""

from vitlab.layers.args import ArgError, LayerTable
from vitlab.layers.attention import Attention
from vitlab.layers.attention_base import AttentionBase
from vitlab.layers.drop_path import DropPath
from vitlab.layers.mha import MultiheadAttention
from vitlab.layers.mlp import Mlp, make_activation
from vitlab.layers.patch_embed import ConvStemEmbed, PatchEmbed, TokenEmbed, grid_for, to_2tuple
from vitlab.layers.pos_embed import resample_pos_embed, sincos_2d
from vitlab.layers.reattention import ReAttention
from vitlab.layers.recorder import AttentionRecorder, find_attention, record_attention
from vitlab.layers.tables import ATTENTIONS, STEMS

__all__ = [
    "ATTENTIONS", "STEMS", "ArgError", "Attention", "AttentionBase", "AttentionRecorder", "ConvStemEmbed", "DropPath",
    "LayerTable", "Mlp", "MultiheadAttention", "PatchEmbed", "ReAttention", "TokenEmbed", "find_attention",
    "grid_for", "make_activation", "record_attention", "resample_pos_embed", "sincos_2d", "to_2tuple",
]
