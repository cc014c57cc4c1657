"""Building blocks with explicit arguments; models assemble them."""

from vitlab.layers.attention import Attention
from vitlab.layers.drop_path import DropPath
from vitlab.layers.mlp import Mlp, make_activation
from vitlab.layers.patch_embed import ConvStemEmbed, PatchEmbed, TokenEmbed, grid_for, to_2tuple
from vitlab.layers.pos_embed import resample_pos_embed, sincos_2d
from vitlab.layers.reattention import ReAttention

__all__ = [
    "Attention", "ConvStemEmbed", "DropPath", "Mlp", "PatchEmbed", "ReAttention", "TokenEmbed",
    "grid_for", "make_activation", "resample_pos_embed", "sincos_2d", "to_2tuple",
]
