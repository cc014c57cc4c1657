"""The published ViT architectures, as a reference for fields a weight file cannot state.

Some formats do not record the attention heads (a bare timm / torchvision / MindSpore state dict:
the qkv matrix is (3D, D) whatever the head count) or how features are pooled (a timm ViT with a
class token and no ``fc_norm`` may pool the token or the average). vitlab never guesses these
silently: a field comes from the user (a flag or ``--model``), from the file's own metadata, or,
when every other shape of the file matches a published architecture exactly, from that
architecture, and the conversion then says which one it took it from.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from vitlab.errors import ConfigError
from vitlab.models.vit_config import ViTConfig
from vitlab.registry import build_model, list_models

if TYPE_CHECKING:  # annotations only: the format table imports the converters, which import this module's users
    from vitlab.weights.formats import WeightFormat

FLAGS = {"num_heads": "--num-heads N", "global_pool": "--global-pool token|avg", "norm_eps": "--norm-eps EPS",
         "no_embed_class": "--no-embed-class / --embed-class"}

# The fields a state dict fixes by its shapes and keys (everything but heads, pooling, numerics).
SHAPE_FIELDS = ("patch_size", "in_chans", "embed_dim", "depth", "mlp_dim", "qkv_bias", "class_token", "dist_token",
                "fc_norm", "representation_size", "pos_embed", "stem", "stem_args", "reg_tokens", "no_embed_class",
                "layer_scale", "pre_norm")


@dataclass(frozen=True)
class Match:
    """A published architecture whose shapes equal a file's, and the unstated fields it fixes."""

    name: str
    values: dict[str, object]


@functools.lru_cache(maxsize=1)
def _published() -> tuple[tuple[str, ViTConfig], ...]:
    """vitlab's registered ViT presets (timm's names and configs), built on the meta device."""
    out = []
    with torch.device("meta"):
        for name in list_models():
            cfg = getattr(build_model(name), "config", None)
            if isinstance(cfg, ViTConfig) and cfg.attn == "mhsa":
                out.append((name, cfg))
    return tuple(out)


def _shape_key(cfg: ViTConfig) -> tuple[object, ...]:
    """What the file's shapes and keys fix; an attention-pooling head has its own keys (attn_pool.*)."""
    return (*(getattr(cfg, f) for f in SHAPE_FIELDS), cfg.global_pool == "map")


def match_published(cfg: ViTConfig, fields: tuple[str, ...]) -> Match | None:
    """The published architecture with ``cfg``'s shapes, if all that match agree on ``fields``; else None."""
    key = _shape_key(cfg)
    hits = [(n, c) for n, c in _published() if _shape_key(c) == key]
    if not hits:
        return None
    values = {f: getattr(hits[0][1], f) for f in fields}
    if any({f: getattr(c, f) for f in fields} != values for _, c in hits[1:]):
        return None  # published models with these shapes disagree: nothing to lean on
    return Match(hits[0][0], values)


def resolve_unstated(cfg: ViTConfig, record: WeightFormat, known: Mapping[str, Any], stated: Collection[str],
                     source: str) -> tuple[ViTConfig, dict[str, Any]]:
    """Fill the fields ``record``'s files cannot state, or refuse.

    A field given by the caller (``known``) or stated by the file is kept. Otherwise, when the
    file's shapes match published architectures that agree on it, their value is taken and
    returned (``{"from": name, field: value}``) so the caller can say so; else ConfigError naming
    the fields and the flags to pass.
    """
    fields = record.unstated(cfg) if record.unstated is not None else ()
    missing = tuple(f for f in fields if f not in known and f not in stated)
    if not missing:
        return cfg, {}
    match = match_published(cfg, missing)
    if match is None:
        raise ConfigError(
            f"{source}: {record.name} files do not record {' and '.join(missing)}, and their shapes (width "
            f"{cfg.embed_dim}, depth {cfg.depth}, patch {cfg.patch_size}, MLP {cfg.mlp_dim}) match no published ViT: "
            f"pass {' '.join(FLAGS.get(f, '--' + f.replace('_', '-')) for f in missing)} (or --model NAME)")
    return cfg.replace(**match.values), {"from": match.name, **match.values}
