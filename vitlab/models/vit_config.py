"""Typed configuration of a Vision Transformer; serialised into every checkpoint.

The token stem and the attention variant are a name from :mod:`vitlab.layers.tables` plus that
layer's arguments (``stem`` + ``stem_args``, ``attn`` + ``attn_args``). Configs written before the
tables had one flat field per argument (``stem_channels``, ``attn_type``, ``reattn_mode`` ...):
:meth:`ViTConfig.from_dict` migrates them, :meth:`ViTConfig.replace` still accepts them, and they
still read as attributes, so old checkpoints, recipes and callers keep working.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vitlab.errors import ConfigError
from vitlab.layers.args import ArgError, LayerTable
from vitlab.layers.tables import ATTENTIONS, STEMS, AttnArgs, StemArgs

_TABLES: dict[str, LayerTable] = {"stem": STEMS, "attn": ATTENTIONS}
# The flat fields of configs from before the tables: legacy name -> (table, argument, value meaning "unset").
LEGACY_ARGS: dict[str, tuple[str, str, Any]] = {
    "stem_channels": ("stem", "channels", ()),
    "stem_layers": ("stem", "layers", ()),
    "stem_width": ("stem", "width", 64),
    "reattn_mode": ("attn", "mode", "official"),
    "reattn_blocks": ("attn", "blocks", None),
    "reattn_init": ("attn", "init", "identity"),
    "reattn_scale": ("attn", "scale", False),
}
LEGACY_NAMES = {"attn_type": "attn"}


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
    # Register tokens (Darcet et al. 2024, "Vision Transformers Need Registers"): learned prefix tokens
    # after the class / distillation tokens, never pooled; tokens are [cls][dist][reg * n][patches].
    reg_tokens: int = 0
    global_pool: Literal["token", "avg", "map"] = "token"  # "map": attention pooling (SigLIP)
    fc_norm: bool = False
    pos_embed: Literal["learn", "sincos", "none"] = "learn"
    # timm's no_embed_class (DeiT-III, DINOv2 with registers): the position table covers the patches
    # only. vitlab keeps the table's prefix rows (held at zero, never added) so it has one layout.
    no_embed_class: bool = False
    init_values: float | None = None  # LayerScale's initial value (CaiT / DeiT-III / DINOv2); None: no LayerScale
    pre_norm: bool = False  # LayerNorm after the embedding (CLIP); the patch projection then has no bias
    # Token stem and attention variant: a name from vitlab.layers.tables and that layer's arguments
    # (canonical: every argument present, defaults filled in; see STEMS / ATTENTIONS).
    stem: str = "patch"  # "patch", "conv", "cnn", "resnetv2", "spt" (shifted patches)
    stem_args: dict[str, Any] = field(default_factory=dict)
    attn: str = "mhsa"  # "mhsa", DeepViT's "reattention" or "lsa" (locality self-attention)
    attn_args: dict[str, Any] = field(default_factory=dict)
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

    def __post_init__(self) -> None:
        # Canonical arguments (defaults filled in, JSON lists as tuples) so equal models compare equal.
        for group, table in _TABLES.items():
            object.__setattr__(self, f"{group}_args", table.canonical(getattr(self, group), getattr(self, f"{group}_args")))

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __getattr__(self, name: str) -> Any:
        """Legacy flat names read from the new fields (``cfg.stem_layers``, ``cfg.attn_type`` ...)."""
        if name in LEGACY_NAMES:
            return getattr(self, LEGACY_NAMES[name])
        if name in LEGACY_ARGS:
            group, arg, unset = LEGACY_ARGS[name]
            return getattr(self, f"{group}_args").get(arg, unset)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def validate(self) -> None:
        """Raise ConfigError naming the field (or ``stem_args.<arg>``) when the combination cannot be built."""
        h, w = self.img_size
        if h % self.patch_size or w % self.patch_size:
            raise ConfigError(f"img_size {h}x{w} is not divisible by patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.global_pool == "token" and not self.class_token:
            raise ConfigError("global_pool 'token' needs class_token: true")
        if self.dist_token and (not self.class_token or self.global_pool != "token"):
            raise ConfigError("dist_token needs class_token: true and global_pool: token (as in DeiT)")
        _check_tokens(self)
        if self.pos_embed == "sincos" and self.embed_dim % 4:
            raise ConfigError(f"pos_embed 'sincos' needs embed_dim divisible by 4, got {self.embed_dim}")
        _check_layer("stem", lambda: self.stem_layer_args().check(self.patch_size))
        _check_layer("attn", lambda: self.attn_layer_args().check())
        if not self.scale_adjustment > 0:
            raise ConfigError(f"scale_adjustment must be > 0, got {self.scale_adjustment}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ConfigError(f"mean/std have {len(self.mean)}/{len(self.std)} entries for in_chans {self.in_chans}")
        # inputs are divided by std: 0 gives inf / NaN for every image, negative flips them; NaN never works
        if not all(math.isfinite(v) and v > 0 for v in self.std) or not all(math.isfinite(v) for v in self.mean):
            raise ConfigError(f"normalisation mean {list(self.mean)} / std {list(self.std)}: every std must be a "
                              "finite number > 0 and every mean finite (set model_args.std / model_args.mean)")
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate", "head_drop_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def layer_scale(self) -> bool:
        """Whether the blocks have LayerScale (a weight file shows it; its initial value it cannot)."""
        return self.init_values is not None

    def stem_layer_args(self) -> StemArgs:
        """The stem's typed arguments (a dataclass of :data:`vitlab.layers.tables.STEMS`)."""
        return STEMS.parse(self.stem, self.stem_args)

    def attn_layer_args(self) -> AttnArgs:
        """The attention variant's typed arguments (a dataclass of :data:`vitlab.layers.tables.ATTENTIONS`)."""
        return ATTENTIONS.parse(self.attn, self.attn_args)

    def replace(self, **overrides: Any) -> ViTConfig:
        """A copy with fields overridden; unknown names raise ConfigError listing the valid ones.

        ``stem_args`` / ``attn_args`` update the arguments of the current stem / attention; a new
        ``stem`` / ``attn`` starts from its own defaults. Legacy flat names (``stem_channels=``,
        ``attn_type=``, ``reattn_blocks=`` ...) are mapped into those dicts; one that the chosen stem
        or attention does not take raises ConfigError unless it holds its old "unset" value.
        """
        fixed, legacy = _split_legacy(overrides)
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(fixed) - names)
        if unknown:
            valid = sorted(names | set(LEGACY_ARGS) | set(LEGACY_NAMES))
            raise ConfigError(f"unknown model option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        if "img_size" in fixed:
            size = fixed["img_size"]
            fixed["img_size"] = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        for key in ("mean", "std"):
            if key in fixed:
                fixed[key] = tuple(fixed[key])
        _numbers(fixed)
        if "in_chans" in fixed and "mean" not in fixed and len(self.mean) != fixed["in_chans"]:
            fixed["mean"] = (self.mean[0],) * fixed["in_chans"]
            fixed["std"] = (self.std[0],) * fixed["in_chans"]
        for group in _TABLES:
            name = fixed.get(group, getattr(self, group))
            # The same variant keeps its arguments (overrides update them); a new one starts from its defaults.
            args = dict(getattr(self, f"{group}_args")) if name == getattr(self, group) else {}
            args.update(fixed.get(f"{group}_args") or {})
            args.update(_legacy_args(group, name, legacy, strict=True))
            fixed[group], fixed[f"{group}_args"] = name, args
        return dataclasses.replace(self, **fixed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists when dumped)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ViTConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError.

        Old flat dicts are migrated: legacy arguments the named stem / attention takes move into its
        ``*_args``; the others are dropped (they never affected the model they were saved with).
        """
        fixed, legacy = _split_legacy(data)
        for group in _TABLES:
            name = fixed.get(group, getattr(cls, group))
            if legacy and f"{group}_args" not in fixed:
                fixed[f"{group}_args"] = _legacy_args(group, name, legacy, strict=False)
        return cls().replace(**fixed)


def _split_legacy(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(modern fields with ``attn_type`` renamed to ``attn``, legacy flat arguments)."""
    fixed = {LEGACY_NAMES.get(k, k): v for k, v in data.items() if k not in LEGACY_ARGS}
    both = [k for k, new in LEGACY_NAMES.items() if k in data and new in data]
    if both:
        raise ConfigError(f"give {both[0]} or {LEGACY_NAMES[both[0]]}, not both")
    return fixed, {k: v for k, v in data.items() if k in LEGACY_ARGS}


def _legacy_args(group: str, name: str, legacy: Mapping[str, Any], strict: bool) -> dict[str, Any]:
    """The legacy flat arguments of table ``group`` that layer ``name`` takes, under their new names."""
    takes = _TABLES[group].arg_names(name)
    out = {}
    for old, value in legacy.items():
        table, arg, unset = LEGACY_ARGS[old]
        if table != group:
            continue
        if arg in takes:
            out[arg] = value
        elif strict and (tuple(value) if isinstance(value, list) else value) != unset:
            raise ConfigError(f"{old} does not apply to {group} {name!r}; its arguments: "
                              f"{', '.join(takes) or '(none)'}")
    return out


def _numbers(fixed: dict[str, Any]) -> None:
    """Float fields given as text become floats: YAML 1.1 (PyYAML, ``--set``) reads ``1e-5`` as a string."""
    floats = {f.name for f in dataclasses.fields(ViTConfig) if "float" in str(f.type) and "tuple" not in str(f.type)}
    for name in floats & set(fixed):
        value = fixed[name]
        if isinstance(value, str):
            try:
                fixed[name] = float(value)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {value!r}") from None
        elif isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
            raise ConfigError(f"{name} must be a number, got {value!r}")


def _check_tokens(cfg: ViTConfig) -> None:
    """The prefix-token, pooling, LayerScale and pre-norm fields."""
    if cfg.global_pool not in ("token", "avg", "map"):
        raise ConfigError(f"global_pool must be 'token', 'avg' or 'map', got {cfg.global_pool!r}")
    if isinstance(cfg.reg_tokens, bool) or not isinstance(cfg.reg_tokens, int) or cfg.reg_tokens < 0:
        raise ConfigError(f"reg_tokens must be an integer >= 0, got {cfg.reg_tokens!r}")
    if cfg.reg_tokens and cfg.dist_token:
        raise ConfigError("reg_tokens with dist_token: no published model has both; choose one")
    if cfg.init_values is not None and not (math.isfinite(cfg.init_values) and cfg.init_values != 0):
        raise ConfigError(f"init_values (LayerScale) must be a finite non-zero number or null, got {cfg.init_values}")
    if cfg.pre_norm and cfg.stem != "patch":
        raise ConfigError(f"pre_norm drops the patch projection's bias, which needs stem 'patch', not {cfg.stem!r}")


def _check_layer(group: str, check: Callable[[], None]) -> None:
    """Run a layer's check; its ArgError becomes a ConfigError naming ``<group>_args.<arg>`` (and the old name)."""
    try:
        check()
    except ArgError as e:
        if e.arg is None:
            raise ConfigError(e.message) from None
        old = next((k for k, (g, a, _) in LEGACY_ARGS.items() if g == group and a == e.arg), None)
        where = f"{group}_args.{e.arg}" + (f" ({old})" if old else "")
        raise ConfigError(f"{where} {e.message}") from None
