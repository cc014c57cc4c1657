"""``vitlab train``'s field flags: vitlab's own and the ones a timm user types, as aliases of config fields.

Each flag sets config fields exactly as ``--set FIELD=VALUE`` would (the resolved config.yaml holds
the field, never the flag). Two sources that set one field to different values (a flag and a
``--set``, or ``--amp`` and ``--precision fp32``) are a one-line ConfigError (exit 2), never a
silent "last one wins". Two flags depend on the recipe and are applied after a first resolution:
bare ``--pretrained`` (the model's default tag) and ``--model-ema`` (timm's decay 0.9998 unless
the recipe or ``--model-ema-decay`` gives one).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from vitlab.cli.help_groups import GroupedOption
from vitlab.config import OptimSettings, TrainConfig, parse_assignment
from vitlab.errors import ConfigError
from vitlab.evaluation.tta import MODES_HELP

DEFAULT_TAG = "default"  # bare --pretrained
TIMM_EMA_DECAY = 0.9998  # timm's --model-ema-decay default

RUN, MODEL, DATA, AUG, OPTIM, EMA, DEVICE = ("Recipe and run", "Model", "Data", "Augmentation and regularisation",
                                             "Optimisation", "Weight averaging (EMA)", "Device and precision")


@dataclass(frozen=True)
class FieldFlag:
    """One option that sets config fields: ``field`` to its value, or the fields ``expand`` returns."""

    decls: tuple[str, ...]
    dest: str
    field: str | None
    group: str
    help: str
    type: Any = None
    is_flag: bool = False
    flag_value: Any = None
    metavar: str | None = None
    expand: Callable[[Any], dict[str, Any]] | None = None

    @property
    def name(self) -> str:
        return max(self.decls, key=len)

    def fields(self, value: Any) -> dict[str, Any]:
        """{dotted field: value} this flag sets when given ``value``."""
        return self.expand(value) if self.expand else {self.field: value}  # type: ignore[dict-item]


def _choices(cls: type, name: str) -> click.Choice:
    return click.Choice(list(typing.get_args(typing.get_type_hints(cls)[name])))


def _classes(value: str) -> dict[str, Any]:
    """``--classes a,b,c``: the names; ``--classes FILE``: the path of a classes.txt (data.classes)."""
    if "," in value:
        return {"data.classes": [name.strip() for name in value.split(",") if name.strip()]}
    return {"data.classes": value}


def _milestones(value: str) -> dict[str, Any]:
    """``--decay-milestones 30,60,90`` (or "30 60 90" quoted): the epochs, as a list."""
    return {"optim.decay_milestones": value.replace(",", " ").split()}


def _aa(spec: str) -> dict[str, Any]:
    from vitlab.data.randaugment import parse_timm_rand  # torchvision: only when --aa is given

    return {f"data.augment.{k}": v for k, v in parse_timm_rand(spec).items()}


FLAGS: tuple[FieldFlag, ...] = (
    FieldFlag(("--model",), "model", "model", MODEL, "Registered model name (`vitlab models` lists them)."),
    FieldFlag(("--img-size",), "img_size", "model_args.img_size", MODEL, "Input resolution (model_args.img_size).", int),
    FieldFlag(("--num-classes",), "num_classes", "model_args.num_classes", MODEL,
              "Classes of the head (model_args.num_classes; must match the data).", int),
    FieldFlag(("--drop-path",), "drop_path", "model_args.drop_path_rate", MODEL,
              "Stochastic depth rate (model_args.drop_path_rate).", float),
    FieldFlag(("--pretrained",), "pretrained", "init.pretrained", MODEL,
              "Initialise from a known public checkpoint tag (`vitlab pretrained`); bare --pretrained: the "
              "model's default tag (the first listed for it).", flag_value=DEFAULT_TAG, metavar="[TAG]"),
    FieldFlag(("--weights",), "init_weights", "init.weights", MODEL,
              "Initialise from a weights file (vitlab, timm, HF, torchvision, .npz, MindSpore) to fine-tune.",
              click.Path(dir_okay=False)),
    FieldFlag(("--data",), "train_data", "data.train", DATA, "Training data: 'mnist', an image folder, or torchvision:NAME."),
    FieldFlag(("--val",), "val_data", "data.val", DATA, "Validation data (default: the source's val split, else a "
              "seeded, stratified carve-out of its training split, data.val_fraction)."),
    FieldFlag(("--test",), "test_data", "data.test", DATA, "Test data, scored once at the end with the checkpoint "
              "chosen on validation (default auto: the source's test split if any; 'none' to skip)."),
    FieldFlag(("--classes",), "classes", None, DATA, "Class names for shards / datasets that do not name their "
              "labels: a,b,c (label i is the i-th name) or a classes.txt, one name a line (data.classes).",
              metavar="NAMES|FILE", expand=_classes),
    FieldFlag(("-b", "--batch-size"), "batch_size", "data.batch_size", DATA, "Training batch size (data.batch_size).", int),
    FieldFlag(("-j", "--workers"), "workers", "data.workers", DATA, "Data-loader worker processes (data.workers).", int),
    FieldFlag(("--strict-data",), "strict_data", "data.strict", DATA, "Stop at the first image file that cannot be "
              "decoded (default: substitute up to data.max_bad_samples, counted per epoch).", is_flag=True),
    FieldFlag(("--aa",), "aa", None, AUG, "RandAugment as timm spells it: rand-m<M>[-n<N>][-mstd<S>][-p<P>], e.g. "
              "rand-m9-mstd0.5 (torchvision's ops at timm's magnitude scale; sets data.augment.randaugment, ra_*).",
              metavar="SPEC", expand=_aa),
    FieldFlag(("--mixup",), "mixup", "mixup.mixup_alpha", AUG, "Mixup alpha (mixup.mixup_alpha; 0: off).", float),
    FieldFlag(("--cutmix",), "cutmix", "mixup.cutmix_alpha", AUG, "CutMix alpha (mixup.cutmix_alpha; 0: off).", float),
    FieldFlag(("--smoothing",), "smoothing", "optim.label_smoothing", AUG, "Label smoothing (optim.label_smoothing).", float),
    FieldFlag(("--tta",), "tta", "tta", AUG, f"Test-time augmentation of validation and test (tta): {MODES_HELP}.",
              _choices(TrainConfig, "tta")),
    FieldFlag(("--epochs",), "epochs", "epochs", OPTIM, "Training epochs.", int),
    FieldFlag(("--lr",), "lr", "optim.lr", OPTIM, "Peak learning rate (optim.lr).", float),
    FieldFlag(("--opt",), "opt", "optim.name", OPTIM, "Optimizer (optim.name).", _choices(OptimSettings, "name")),
    FieldFlag(("--weight-decay",), "weight_decay", "optim.weight_decay", OPTIM, "Weight decay (optim.weight_decay).", float),
    FieldFlag(("--sched",), "sched", "optim.schedule", OPTIM, "LR schedule after the linear warmup (optim.schedule): "
              "cosine / linear / poly decay to --min-lr over the steps after the warmup; step / multistep decay by "
              "--decay-rate at epochs counted from the start; constant.",
              metavar="[cosine|linear|poly|step|multistep|constant]"),
    FieldFlag(("--min-lr",), "min_lr", "optim.min_lr", OPTIM, "Lowest rate: the end of cosine / linear / poly, a floor "
              "under step / multistep (optim.min_lr).", float),
    FieldFlag(("--warmup-epochs",), "warmup_epochs", "optim.warmup_epochs", OPTIM, "Linear warmup (optim.warmup_epochs).",
              float),
    FieldFlag(("--warmup-lr",), "warmup_lr", "optim.warmup_lr", OPTIM, "Rate at the first warmup step, as timm "
              "(optim.warmup_lr; default: the ramp lr/W, 2 lr/W, ... over W warmup steps).", float),
    FieldFlag(("--decay-epochs",), "decay_epochs", "optim.decay_epochs", OPTIM, "step: decay every this many epochs "
              "(optim.decay_epochs).", float),
    FieldFlag(("--decay-rate", "--dr"), "decay_rate", "optim.decay_rate", OPTIM, "step / multistep: factor of each "
              "decay (optim.decay_rate).", float),
    FieldFlag(("--decay-milestones",), "decay_milestones", None, OPTIM, "multistep: the epochs it decays at, "
              "comma-separated, e.g. 30,60,90 (optim.decay_milestones).", metavar="E1,E2,...", expand=_milestones),
    FieldFlag(("--poly-power",), "poly_power", "optim.poly_power", OPTIM, "poly: the power of (1 - progress) "
              "(optim.poly_power; timm's train.py reads it from --decay-rate, vitlab keeps the two apart).", float),
    FieldFlag(("--model-ema-decay",), "model_ema_decay", "ema.decay", EMA, "EMA decay (ema.decay; turns EMA on).", float),
    FieldFlag(("--device",), "device", "device", DEVICE, "auto (default), cpu, cuda, cuda:N, mps."),
    FieldFlag(("--precision",), "precision", "precision", DEVICE, "Autocast precision; auto: bf16 where a timed "
              "training step of this model runs >= 1.15x fp32 here (cached per machine), else fp32.", _choices(TrainConfig, "precision")),
    FieldFlag(("--amp",), "amp", "precision", DEVICE, "Mixed precision, timm's spelling: the same as --precision auto.",
              is_flag=True, expand=lambda v: {"precision": "auto"}),
    FieldFlag(("--seed",), "seed", "seed", DEVICE, "Run seed (initial weights, order, augmentation).", int),
)
MODEL_EMA = click.option("--model-ema", "model_ema", is_flag=True, cls=GroupedOption, group=EMA,
                         help=f"Keep an EMA of the weights (ema.decay: the recipe's, else --model-ema-decay, else "
                              f"timm's {TIMM_EMA_DECAY}).")


def field_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a click command with every :data:`FLAGS` option (and ``--model-ema``), in table order."""
    for flag in reversed(FLAGS):
        extra: dict[str, Any] = {"is_flag": True} if flag.is_flag else {"type": flag.type}
        if flag.flag_value is not None:
            extra = {"is_flag": False, "flag_value": flag.flag_value}
        fn = click.option(*flag.decls, flag.dest, cls=GroupedOption, group=flag.group, help=flag.help,
                          metavar=flag.metavar, default=None, **extra)(fn)
        if flag.dest == "model_ema_decay":  # listed just above its decay
            fn = MODEL_EMA(fn)
    return fn


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _nest(field: str, value: Any) -> dict[str, Any]:
    node: dict[str, Any] = {}
    cur = node
    *parents, last = field.split(".")
    for part in parents:
        cur = cur.setdefault(part, {})
    cur[last] = value
    return node


def field_overrides(values: dict[str, Any], assignments: tuple[str, ...]) -> list[dict[str, Any]]:
    """Config overrides from the given flags (``values``: dest -> value, None / False when absent) and
    the ``--set`` assignments; ConfigError when two of them set one field to different values."""
    sources: dict[str, tuple[str, Any]] = {}
    overrides: list[dict[str, Any]] = []

    def claim(source: str, field: str, value: Any) -> None:
        if field in sources and sources[field][1] != value:
            other, before = sources[field]
            raise ConfigError(f"{other} and {source} set {field} to different values ({before!r}, {value!r}): "
                              "give one of them")
        sources[field] = (source, value)

    for flag in FLAGS:
        value = values.get(flag.dest)
        if value is None or value is False:
            continue
        for field, v in flag.fields(value).items():
            claim(f"{flag.name} {value}" if not flag.is_flag else flag.name, field, v)
            overrides.append(_nest(field, v))
    for text in assignments:
        parsed = parse_assignment(text)
        for field, v in _leaves(parsed).items():
            claim(f"--set {text}", field, v)
        overrides.append(parsed)
    return overrides


def late_overrides(cfg: TrainConfig, values: dict[str, Any], echo: Callable[[str], None]) -> list[dict[str, Any]]:
    """Overrides that depend on the first resolution: bare --pretrained's tag, --model-ema's decay."""
    out: list[dict[str, Any]] = []
    if cfg.init.pretrained == DEFAULT_TAG:
        from vitlab.weights.specs import list_specs

        specs = list_specs(cfg.model)
        if not specs:
            raise ConfigError(f"--pretrained: no pretrained weights are listed for {cfg.model} "
                              "(`vitlab pretrained` lists the models that have them; --weights FILE takes a local file)")
        echo(f"--pretrained: {cfg.model}.{specs[0].tag} (the model's default tag)")
        out.append({"init": {"pretrained": specs[0].tag}})
    if values.get("model_ema") and cfg.ema.decay is None:
        echo(f"--model-ema: ema.decay {TIMM_EMA_DECAY} (timm's default)")
        out.append({"ema": {"decay": TIMM_EMA_DECAY}})
    return out
