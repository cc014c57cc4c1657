"""Typed configuration of a Vision Transformer; serialised into every checkpoint."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

from vitlab.errors import ConfigError


@dataclass(frozen=True)
class ViTConfig:
    """Everything needed to rebuild a ViT; see :class:`vitlab.models.vit.VisionTransformer`."""

    img_size: tuple[int, int] = (224, 224)
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    act: Literal["gelu", "gelu_tanh", "relu"] = "gelu"
    class_token: bool = True
    dist_token: bool = False  # DeiT's distillation token: a second prefix token with its own head
    global_pool: Literal["token", "avg"] = "token"
    fc_norm: bool = False
    pos_embed: Literal["learn", "sincos", "none"] = "learn"
    stem: Literal["patch", "conv", "cnn", "resnetv2"] = "patch"
    stem_channels: tuple[int, ...] = ()  # "conv": channels of the stride-2 convs
    stem_layers: tuple[int, ...] = ()  # "resnetv2": bottlenecks per stage, e.g. (3, 4, 9) for R50
    stem_width: int = 64  # "cnn" / "resnetv2": stem channels
    # Attention: plain multi-head self-attention or DeepViT's re-attention (vitlab.layers.reattention).
    attn_type: Literal["mhsa", "reattention"] = "mhsa"
    reattn_mode: Literal["official", "vit-pytorch"] = "official"
    reattn_blocks: int | None = None  # re-attention in the last k blocks; None: every block
    reattn_init: Literal["identity", "random"] = "identity"
    reattn_scale: bool = False  # official transform_scale: mixed maps times head_dim ** -0.5
    scale_adjustment: float = 1.0  # official DeepViT block: x + f(LN(x * s)) / s on both branches
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    head_drop_rate: float = 0.0
    representation_size: int | None = None
    # Preprocessing the model expects; travels with checkpoints so eval / predict need nothing else.
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    crop_pct: float = 0.875
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bicubic"

    def validate(self) -> None:
        """Raise ConfigError naming the field when the combination cannot be built."""
        h, w = self.img_size
        if h % self.patch_size or w % self.patch_size:
            raise ConfigError(f"img_size {h}x{w} is not divisible by patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.global_pool == "token" and not self.class_token:
            raise ConfigError("global_pool 'token' needs class_token: true")
        if self.dist_token and (not self.class_token or self.global_pool != "token"):
            raise ConfigError("dist_token needs class_token: true and global_pool: token (as in DeiT)")
        if self.pos_embed == "sincos" and self.embed_dim % 4:
            raise ConfigError(f"pos_embed 'sincos' needs embed_dim divisible by 4, got {self.embed_dim}")
        if self.stem == "conv" and 2 ** len(self.stem_channels) != self.patch_size:
            raise ConfigError(f"stem_channels {self.stem_channels} downsample by {2 ** len(self.stem_channels)}, "
                              f"not by patch_size {self.patch_size}")
        for name in ("stem", "attn_type", "reattn_mode", "reattn_init"):
            allowed = typing.get_args(typing.get_type_hints(ViTConfig)[name])
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {getattr(self, name)!r}")
        if self.stem == "cnn" and self.patch_size % 2:
            raise ConfigError(f"stem 'cnn' needs an even patch_size, got {self.patch_size}")
        resnet_stride = 4 * 2 ** max(len(self.stem_layers) - 1, 0)
        if self.stem == "resnetv2" and (not self.stem_layers or resnet_stride != self.patch_size):
            raise ConfigError(f"stem_layers {self.stem_layers} give a ResNet of stride {resnet_stride}, "
                              f"not patch_size {self.patch_size}")
        if self.reattn_blocks is not None and self.reattn_blocks < 0:
            raise ConfigError(f"reattn_blocks must be >= 0 or null, got {self.reattn_blocks}")
        if not self.scale_adjustment > 0:
            raise ConfigError(f"scale_adjustment must be > 0, got {self.scale_adjustment}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ConfigError(f"mean/std have {len(self.mean)}/{len(self.std)} entries for in_chans {self.in_chans}")
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate", "head_drop_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def replace(self, **overrides: Any) -> ViTConfig:
        """A copy with fields overridden; unknown names raise ConfigError listing the valid ones."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown model option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        fixed = dict(overrides)
        if "img_size" in fixed:
            size = fixed["img_size"]
            fixed["img_size"] = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        for key in ("stem_channels", "stem_layers", "mean", "std"):
            if key in fixed:
                fixed[key] = tuple(fixed[key])
        if "in_chans" in fixed and "mean" not in fixed and len(self.mean) != fixed["in_chans"]:
            fixed["mean"] = (self.mean[0],) * fixed["in_chans"]
            fixed["std"] = (self.std[0],) * fixed["in_chans"]
        return dataclasses.replace(self, **fixed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        return cls().replace(**data)
