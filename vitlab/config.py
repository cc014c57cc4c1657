"""Typed, layered training config: dataclass defaults -> YAML recipe -> command-line overrides.

The resolved config is written into every run folder (``config.yaml``) and read back by
``--resume``. Unknown keys are errors that name the key, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import yaml

from vitlab.errors import ConfigError

T = TypeVar("T")


@dataclass
class AugmentSettings:
    """Training-time augmentation (see vitlab.data.transforms.AugmentConfig).

    ``auto`` (random_resized_crop, hflip): on (crop, p=0.5) for photos (an image folder, wds: shards,
    an hf: dataset), off for the bundled digits and torchvision sets; the trainer writes the value
    it chose into config.yaml.
    RandAugment: ``ra_num_ops`` ops at ``ra_magnitude`` out of ``ra_levels`` of each op's range
    (torchvision's scale is 30, timm's ``--aa rand-m9`` is 10), varied per image by a normal
    ``ra_magnitude_std`` (timm's mstd; above 100: uniform in [0, ra_magnitude]), each op applied
    with probability ``ra_prob``.
    """

    hflip: float | Literal["auto"] = "auto"
    random_resized_crop: bool | Literal["auto"] = "auto"
    scale: tuple[float, float] = (0.08, 1.0)
    crop_padding: int = 0
    crop_padding_mode: Literal["constant", "reflect"] = "constant"
    affine_degrees: float = 0.0
    affine_translate: float = 0.0
    affine_scale: tuple[float, float] = (1.0, 1.0)
    elastic_alpha: float = 0.0  # elastic distortion (Simard et al. 2003; torchvision's alpha / sigma convention)
    elastic_sigma: float = 4.0
    randaugment: bool = False
    ra_num_ops: int = 2
    ra_magnitude: float = 9
    ra_levels: int = 30
    ra_magnitude_std: float = 0.0
    ra_prob: float = 1.0  # probability of applying each drawn op (timm: 0.5)
    color_jitter: float = 0.0
    random_erasing: float = 0.0


@dataclass
class DataSettings:
    """Where the images come from and how they are batched."""

    train: str | None = "mnist"  # null in recipes that need --data
    val: str | None = None  # None: the source's own val split, else a seeded stratified carve-out of train
    test: str | None = "auto"  # auto: the source's own test split if it has one; null / none: no test evaluation
    val_fraction: float = 0.1  # share of each class carved from train for validation (when there is no val split)
    split_seed: int = 0  # seeds the carve-out (not the run seed: runs with other seeds validate on the same images)
    root: str | None = None  # download folder for torchvision:NAME sources
    batch_size: int = 128
    eval_batch_size: int = 512
    workers: int = 0
    cache: bool = False  # decode image folders into memory once (uint8); for small images that fit in RAM
    # Class names for sources that do not name their labels (wds: shards without classes.txt, hf:
    # integer labels): a list, or the path of a classes.txt (one name a line); label i is name i.
    # A source that names its classes (folders, ClassLabel) must agree with it.
    classes: str | tuple[str, ...] | None = None
    drop_last: bool = True
    # Untrusted files (vitlab.data.image_io / bad_samples): refuse image headers above this many
    # pixels (null: $VITLAB_MAX_IMAGE_PIXELS, else Pillow's 89,478,485); stop at the first file
    # that fails to decode (strict), else substitute up to max_bad_samples of them, then stop.
    max_image_pixels: int | None = None
    strict: bool = False
    max_bad_samples: int = 100
    augment: AugmentSettings = field(default_factory=AugmentSettings)


@dataclass
class OptimSettings:
    """Optimizer, schedule and loss."""

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    # After a linear warmup (vitlab.engine.schedules): cosine / linear / poly decay to min_lr over
    # the steps after it; step / multistep multiply by decay_rate at epochs counted from the start
    # (floored at min_lr); constant. Defaults of the decay fields are timm's train.py's.
    schedule: Literal["cosine", "linear", "poly", "step", "multistep", "constant"] = "cosine"
    warmup_epochs: float = 1.0
    warmup_lr: float | None = None  # null: the ramp (s + 1) / W from lr / W; a rate: timm's warmup_lr start
    decay_epochs: float = 90.0  # step: every this many epochs
    decay_rate: float = 0.1  # step / multistep: the factor of each decay
    decay_milestones: tuple[float, ...] = (90.0, 180.0, 270.0)  # multistep: the epochs it decays at
    poly_power: float = 0.5  # poly: (1 - progress) ** poly_power (timm's PolyLRScheduler default)
    clip_grad: float | None = 1.0
    label_smoothing: float = 0.1
    layer_decay: float | None = None  # layer-wise LR decay for fine-tuning (e.g. 0.75)
    accum_steps: int = 1  # micro-batches per optimizer step (gradient accumulation)


@dataclass
class MixupSettings:
    """Mixup / CutMix on training batches; off while both alphas are 0."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5


@dataclass
class EmaSettings:
    """Exponential moving average of the weights; off while decay is null."""

    decay: float | None = None
    warmup: bool = True
    validate_raw: bool = True  # false: validate the EMA weights only (best_metric ema_*), half the val cost


@dataclass
class CheckpointSettings:
    """When checkpoints are written and which one is "best"."""

    every_steps: int | None = None  # also at every epoch end
    keep: int = 2  # resumable checkpoints kept (newest first)
    best_metric: str = "val_top1"  # or val_loss, ema_val_top1, ...; *loss is minimised


@dataclass
class InitSettings:
    """Start from existing weights (fine-tuning): the head is re-initialised when classes differ and
    the position embeddings are resampled when the resolution differs."""

    weights: str | None = None  # a local file of any format vitlab.weights reads (vitlab, timm, HF, .npz, ...)
    pretrained: str | None = None  # a tag of a known public checkpoint (`vitlab pretrained` lists them)
    resample: Literal["bicubic-aa", "bicubic", "bilinear", "nearest"] = "bicubic-aa"
    whiten_images: int = 0  # >0: the image's first conv starts as a patch-whitening filter bank of this many train images


@dataclass
class TrainConfig:
    """A whole training run."""

    model: str = "vit_pico_patch4_28"
    model_args: dict[str, Any] = field(default_factory=dict)
    data: DataSettings = field(default_factory=DataSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    mixup: MixupSettings = field(default_factory=MixupSettings)
    ema: EmaSettings = field(default_factory=EmaSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    init: InitSettings = field(default_factory=InitSettings)
    epochs: int = 10
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    eval_every: int = 1
    tta: Literal["none", "hflip", "shift", "hflip_shift"] = "none"  # test-time augmentation of val and test (vitlab.evaluation.tta)
    log_every: int = 20
    max_steps_per_epoch: int | None = None  # cap for smoke runs
    max_eval_images: int | None = None  # evaluate on the first N validation images only (smoke runs)
    nonfinite: Literal["stop", "skip"] = "stop"  # what a non-finite loss / gradient norm does
    max_bad_steps: int | None = 5  # with nonfinite=skip: this many bad steps in a row stop the run (null: no limit)
    max_skipped_fraction: float = 0.5  # with nonfinite=skip: an epoch skipping more of its steps stops the run
    sync_bn: bool | None = None  # BatchNorm over all processes under torchrun; null: on when >1 process
    compile: bool = False  # torch.compile the model
    fsdp: bool = False  # shard parameters with FSDP2 (fully_shard) under torchrun
    tensorboard: bool = True  # event files in RUN/tb (needs the tensorboard package)
    smoke: dict[str, Any] = field(default_factory=dict)  # overrides applied by --smoke

    def validate(self) -> None:
        """Raise ConfigError naming the field for values that cannot work."""
        if self.init.weights and self.init.pretrained:
            raise ConfigError("init.weights and init.pretrained conflict: give one of them")
        if self.init.whiten_images and (self.init.weights or self.init.pretrained):
            raise ConfigError("init.whiten_images and init.weights / init.pretrained conflict: whitening initialises "
                              "the first conv of a model trained from scratch")
        if not self.data.train:
            raise ConfigError("data.train is not set: pass --data (an image folder, 'mnist' or torchvision:NAME)")
        checks = [
            (self.epochs >= 1, "epochs", self.epochs, "must be at least 1"),
            (self.data.batch_size >= 1, "data.batch_size", self.data.batch_size, "must be at least 1"),
            (self.data.eval_batch_size >= 1, "data.eval_batch_size", self.data.eval_batch_size, "must be at least 1"),
            (self.data.workers >= 0, "data.workers", self.data.workers, "must be >= 0"),
            (self.init.whiten_images >= 0, "init.whiten_images", self.init.whiten_images, "must be >= 0 (0: off)"),
            (self.data.max_image_pixels is None or self.data.max_image_pixels >= 1, "data.max_image_pixels",
             self.data.max_image_pixels, "must be at least 1 or null"),
            (self.data.max_bad_samples >= 0, "data.max_bad_samples", self.data.max_bad_samples, "must be >= 0"),
            (0 < self.data.val_fraction < 1, "data.val_fraction", self.data.val_fraction, "must be in (0, 1)"),
            (math.isfinite(self.optim.lr) and self.optim.lr > 0, "optim.lr", self.optim.lr, "must be a positive number"),
            (math.isfinite(self.optim.min_lr) and self.optim.min_lr >= 0, "optim.min_lr", self.optim.min_lr, "must be >= 0"),
            (self.optim.weight_decay >= 0, "optim.weight_decay", self.optim.weight_decay, "must be >= 0"),
            (self.optim.warmup_epochs >= 0, "optim.warmup_epochs", self.optim.warmup_epochs, "must be >= 0"),
            (self.optim.min_lr <= self.optim.lr, "optim.min_lr", self.optim.min_lr, f"must not exceed optim.lr={self.optim.lr}"),
            (self.optim.warmup_lr is None or 0 <= self.optim.warmup_lr <= self.optim.lr, "optim.warmup_lr",
             self.optim.warmup_lr, f"must be in [0, optim.lr={self.optim.lr}] or null"),
            (self.optim.decay_epochs > 0, "optim.decay_epochs", self.optim.decay_epochs, "must be > 0"),
            (self.optim.poly_power > 0, "optim.poly_power", self.optim.poly_power, "must be > 0"),
            # timm's train.py takes poly's power from --decay-rate; here a decay rate has no effect on
            # poly, so a timm user's `--sched poly --decay-rate 2` is refused rather than ignored.
            (self.optim.schedule != "poly" or self.optim.decay_rate == 0.1, "optim.decay_rate", self.optim.decay_rate,
             "has no effect on optim.schedule=poly: set its power with --poly-power (optim.poly_power)"),
            (0 < self.optim.decay_rate <= 1, "optim.decay_rate", self.optim.decay_rate, "must be in (0, 1]"),
            (_increasing(self.optim.decay_milestones), "optim.decay_milestones", list(self.optim.decay_milestones),
             "must be epochs > 0 in increasing order"),
            (self.optim.schedule != "multistep" or bool(self.optim.decay_milestones), "optim.decay_milestones",
             list(self.optim.decay_milestones), "optim.schedule=multistep needs at least one milestone"),
            (0 <= self.optim.label_smoothing < 1, "optim.label_smoothing", self.optim.label_smoothing, "must be in [0, 1)"),
            (self.optim.clip_grad is None or self.optim.clip_grad > 0, "optim.clip_grad", self.optim.clip_grad, "must be > 0 or null"),
            (self.eval_every >= 1, "eval_every", self.eval_every, "must be at least 1"),
            (self.log_every >= 1, "log_every", self.log_every, "must be at least 1"),
            (self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1, "max_steps_per_epoch",
             self.max_steps_per_epoch, "must be at least 1 or null"),
            (self.optim.accum_steps >= 1, "optim.accum_steps", self.optim.accum_steps, "must be at least 1"),
            (self.optim.layer_decay is None or 0 < self.optim.layer_decay <= 1, "optim.layer_decay",
             self.optim.layer_decay, "must be in (0, 1] or null"),
            (self.ema.decay is None or 0 < self.ema.decay < 1, "ema.decay", self.ema.decay, "must be in (0, 1) or null"),
            (self.mixup.mixup_alpha >= 0 and self.mixup.cutmix_alpha >= 0, "mixup", self.mixup, "alphas must be >= 0"),
            (self.checkpoint.every_steps is None or self.checkpoint.every_steps >= 1, "checkpoint.every_steps",
             self.checkpoint.every_steps, "must be at least 1 or null"),
            (self.checkpoint.keep >= 1, "checkpoint.keep", self.checkpoint.keep, "must be at least 1"),
            (self.max_bad_steps is None or self.max_bad_steps >= 1, "max_bad_steps", self.max_bad_steps,
             "must be at least 1 or null"),
            (0 < self.max_skipped_fraction <= 1, "max_skipped_fraction", self.max_skipped_fraction, "must be in (0, 1]"),
        ]
        for ok, name, value, why in checks:
            if not ok:
                raise ConfigError(f"{name}={value}: {why}")
        metric = self.checkpoint.best_metric
        if not (metric.startswith(("val_", "ema_val_")) and metric.split("val_", 1)[1] in ("top1", "top5", "loss", "ece")):
            raise ConfigError(f"checkpoint.best_metric={metric!r}: expected val_top1, val_top5, val_loss, val_ece "
                              "or the same with an ema_ prefix")
        if metric.startswith("ema_") and self.ema.decay is None:
            raise ConfigError(f"checkpoint.best_metric={metric!r} needs ema.decay to be set")


def _increasing(values: tuple[float, ...]) -> bool:
    return all(v > 0 and math.isfinite(v) for v in values) and all(a < b for a, b in zip(values, values[1:]))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert YAML / CLI values to the annotated type; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("null", "none") and type(None) in args:
            return None
        errors = []
        for inner in (a for a in args if a is not type(None)):  # the first member that takes the value
            if inner is str and isinstance(value, (list, tuple, dict)):
                errors.append("str")  # str() would take any value: a YAML list is never a string
                continue
            try:
                return _coerce(value, inner, key)
            except ConfigError as err:
                errors.append(str(err).split(": ", 1)[-1].removeprefix("expected "))
        raise ConfigError(f"{key}={value!r}: expected {' or '.join(errors)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r}: expected one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        item_types = args if args and args[-1] is not Ellipsis else (args[0],) * len(value)
        if len(item_types) != len(value):
            raise ConfigError(f"{key}={value!r}: expected {len(item_types)} values")
        return tuple(_coerce(v, t, key) for v, t in zip(value, item_types))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected a mapping")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r}: expected {getattr(tp, '__name__', tp)}") from None
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
                          f"valid under {prefix or 'top level'}: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples as lists) for YAML."""
    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))


class _Dotted(dict):
    """A level of a dotted ``--set`` key (``model_args.stem_args.extra=2``): merged into what is there."""


def _merge(base: dict[str, Any], update: dict[str, Any], deep: bool = True) -> dict[str, Any]:
    """``update`` over ``base``, key by key all the way down, except that inside ``model_args`` a mapping
    value replaces the old one whole (another stem must not inherit its arguments) off a dotted path."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and (deep or isinstance(v, _Dotted)):
            out[k] = _merge(out[k], v, deep and k != "model_args")
        else:
            out[k] = _merge({}, v, deep) if isinstance(v, _Dotted) else v  # plain dicts from here on
    return out


def parse_assignment(text: str) -> dict[str, Any]:
    """``"optim.lr=3e-4"`` -> ``{"optim": {"lr": 3e-4}}`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    node: dict[str, Any] = _Dotted()
    cur = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cur[part] = _Dotted()
        cur = cur[part]
    cur[parts[-1]] = value
    return node


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def saved_precision(path: str | Path) -> str:
    """The precision a run recorded in its ``config.yaml`` (what its ``auto`` resolved to), else ``auto``.

    A resumed ``auto`` run continues in its own precision rather than timing again: a new timing
    (another machine, a cleared cache) could choose differently and break exact resume.
    """
    try:
        value = read_yaml(path).get("precision", "auto")
    except ConfigError:  # no config yet: the run directory check reports it
        return "auto"
    return value if value in ("fp32", "bf16", "fp16") else "auto"


def resolve_layered(cls: type[T], file: str | Path | None, overrides: list[dict[str, Any]] | None, smoke: bool,
                    smoke_default: dict[str, Any]) -> T:
    """Any run config: ``cls()`` defaults, then ``file``, then each override in order, then (with
    ``smoke``) the recipe's ``smoke`` block or ``smoke_default``; built, typed and validated."""
    data: dict[str, Any] = to_dict(cls())
    if file is not None:
        data = _merge(data, read_yaml(file))
    for update in overrides or []:
        data = _merge(data, update)
    if smoke:
        data = _merge(data, data.get("smoke") or smoke_default)
    cfg = _build(cls, data)
    cfg.validate()
    return cfg


def resolve_config(
    file: str | Path | None = None, overrides: list[dict[str, Any]] | None = None, smoke: bool = False
) -> TrainConfig:
    """Defaults, then ``file``, then each override in order; ``smoke`` applies the recipe's smoke block."""
    return resolve_layered(TrainConfig, file, overrides, smoke,
                           {"epochs": 1, "max_steps_per_epoch": 5, "max_eval_images": 256})


def resolve_auto_augment(cfg: TrainConfig, photos: bool, kind: str = "a folder of photos") -> tuple[TrainConfig, str | None]:
    """``cfg`` with its ``auto`` augmentation fields made concrete, and a line saying what was chosen.

    For a folder of photos (``photos``, :func:`vitlab.data.sources.photo_source`): random-resized
    crops (unless the recipe pads and crops, ``crop_padding``) and horizontal flips with p=0.5, the
    usual ImageNet-style training augmentation; otherwise (bundled digits, torchvision sets) off.
    ``kind`` names the source in the note ("a folder of photos", "photos in WebDataset shards").
    The note is None when nothing was ``auto`` or nothing was switched on.
    """
    aug = cfg.data.augment
    rrc, flip = aug.random_resized_crop, aug.hflip
    if rrc == "auto":
        rrc = photos and aug.crop_padding == 0
    if flip == "auto":
        flip = 0.5 if photos else 0.0
    chosen = [f"random-resized crop (scale {aug.scale[0]:g}-{aug.scale[1]:g}) at the model's input size"
              if rrc and aug.random_resized_crop == "auto" else "",
              f"horizontal flip p={flip:g}" if flip and aug.hflip == "auto" else ""]
    new = dataclasses.replace(aug, random_resized_crop=rrc, hflip=flip)
    resolved = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, augment=new))
    if not any(chosen):
        return resolved, None
    return resolved, (f"training augmentation for {kind} (the default, data.augment fields auto): "
                      + " + ".join(c for c in chosen if c)
                      + "; set data.augment.random_resized_crop=false / data.augment.hflip=0 to turn it off")


# Fields that may change when a run is resumed: they do not alter what is computed.
RESUME_SAFE = {"device", "data.workers", "data.eval_batch_size", "eval_every", "log_every", "checkpoint.keep",
               "checkpoint.every_steps", "tensorboard", "smoke", "compile", "max_eval_images",
               "data.max_image_pixels", "data.strict", "data.max_bad_samples"}  # only refuse or stop on bad files


def config_diff(old: TrainConfig, new: TrainConfig) -> list[str]:
    """Dotted names of the fields that differ (nested dicts compared leaf by leaf)."""
    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("smoke",):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out
    a, b = flat(to_dict(old)), flat(to_dict(new))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _flat(cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("smoke",):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = v
    walk(to_dict(cfg), "")
    return out


def check_resume_config(saved_path: Path, cfg: Any, cls: type, safe: set[str], allow: tuple[str, ...],
                        echo: Callable[[str], None]) -> None:
    """Refuse a resumed run whose config differs from the saved one outside ``safe`` and ``allow``;
    say which allowed changes apply (they take effect from the resume step)."""
    saved = _build(cls, read_yaml(saved_path))
    changed = config_diff(saved, cfg)
    differing = [f for f in changed if f not in safe and f not in allow]
    if differing:
        raise ConfigError(f"cannot resume {saved_path.parent} with a different config: {', '.join(differing)} differ "
                          "(pass --allow-change FIELD to accept a change)")
    old, new = _flat(saved), _flat(cfg)
    applied = [f"{f} {old.get(f)!r} -> {new.get(f)!r}" for f in changed if f in allow]
    if applied:
        echo("applying changed config from the resume step on: " + "; ".join(applied))
