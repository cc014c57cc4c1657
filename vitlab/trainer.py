"""A classification run: config -> model, data, task -> the one engine (:mod:`vitlab.engine.fit`).

This is the one place that reads a whole :class:`~vitlab.config.TrainConfig`; the engine, the
task, data and models take explicit arguments. ``vitlab train`` is a thin wrapper, and the same
code runs as one process or under ``torchrun``. Inputs are validated before the run folder is
created, so bad input never touches a run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset

from vitlab.config import (RESUME_SAFE, DataSettings, OptimSettings, TrainConfig, check_resume_config, resolve_auto_augment,
                           save_config, saved_precision)
from vitlab.data import AugmentConfig, ImageFolderDataset, Preprocess, build_eval_transform, build_train_transform, open_source
from vitlab.data.bad_samples import ImagePolicy
from vitlab.data.cache import FolderCache
from vitlab.data.mixup import MixupCutmix
from vitlab.data.seeded import SeededTransform
from vitlab.data import hf_source, wds_source
from vitlab.data.sources import native_splits, photo_source
from vitlab.data.splits import SplitView
from vitlab.engine import distributed
from vitlab.engine.fit import FitResult, fit, seed_everything
from vitlab.engine.optim import build_optimizer
from vitlab.engine.schedules import Schedule, lambda_scheduler
from vitlab.engine.rundir import RunDir, claim_run_dir
from vitlab.engine.settings import settings_from_config
from vitlab.errors import ConfigError, DataError
from vitlab.layers.whiten_init import first_image_conv, whiten_conv_
from vitlab.api import create_model
from vitlab.tasks.classification import ClassificationTask
from vitlab.utils.device import resolve_device, resolve_precision, resolve_train_precision

TrainResult = FitResult  # the name callers have used since the first release


@dataclass
class _Prepared:
    model: torch.nn.Module
    train_ds: SeededTransform
    val_ds: Dataset
    test_ds: Dataset | None
    classes: list[str]
    device: torch.device
    precision: str


def _folders(ds: Dataset, fn: Callable[[ImageFolderDataset], Dataset]) -> Dataset:
    """Apply ``fn`` to the image folder under ``ds`` (itself, or the base of a carve-out view)."""
    if isinstance(ds, SplitView):
        return SplitView(_folders(ds.base, fn), ds.indices, ds.role)
    return fn(ds) if isinstance(ds, ImageFolderDataset) else ds


def _verified(ds: ImageFolderDataset) -> ImageFolderDataset:
    ds.verify()
    return ds


def _streamed(source: str) -> str | None:
    """What a ``wds:`` / ``hf:`` source is, in words; None for other sources."""
    low = source.strip().lower()
    if low.startswith(wds_source.PREFIX):
        return "WebDataset shards"
    return "a Hugging Face dataset" if low.startswith(hf_source.PREFIX) else None


def _augment_kind(source: str) -> str:
    """The training source in the augmentation note's words ("a folder of photos", ...)."""
    streamed = _streamed(source)
    return f"photos in {streamed}" if streamed else "a folder of photos"


def class_names(d: DataSettings) -> list[str] | None:
    """``data.classes``: the given list, the names in a classes.txt (one a line), or None."""
    if d.classes is None or isinstance(d.classes, tuple):
        return None if d.classes is None else list(d.classes)
    path = Path(d.classes).expanduser()
    if not path.is_file():
        raise DataError(f"data.classes={d.classes}: no such file (give a classes.txt, one name a line, or a list)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"data.classes={d.classes}: the file names no class")
    return names


def _open_split(source: str, split: str, transform: Callable | None, cfg: TrainConfig, carve_val: bool,
                cache: FolderCache) -> Dataset:
    d = cfg.data
    kwargs = dict(root=d.root, policy=ImagePolicy.from_settings(d), val_fraction=d.val_fraction, split_seed=d.split_seed,
                  classes=class_names(d))
    if not carve_val and split not in native_splits(source):
        split = "train"  # a source named for one role only (--val / data.test): all of it, no carve-out
    ds = open_source(source, split, transform, carve_val=carve_val, **kwargs)  # type: ignore[arg-type]
    if d.cache:  # decoding every file also verifies it
        return _folders(ds, lambda f: cache(f, f.transform))
    return _folders(ds, _verified)


def _cache_note(d: DataSettings) -> str | None:
    """The line saying data.cache has no effect on a streamed source, or None.

    A note, not a refusal: caching changes only speed, never what is trained, and a recipe that
    sets it for small images (cifar10) should still run unchanged on shards.
    """
    streamed = [f"{s} ({_streamed(s)})" for s in dict.fromkeys(x for x in (d.train, d.val, d.test) if x)
                if _streamed(s)]
    if not d.cache or not streamed:
        return None
    return (f"data.cache: not applied to {', '.join(streamed)}; samples are read from disk on demand (the OS page "
            "cache keeps repeats fast); only image folders are decoded into memory")


def _open_data(cfg: TrainConfig, pre: Preprocess, echo: Callable[[str], None]) -> tuple[Dataset, Dataset, Dataset | None]:
    """(train without transform, val, test or None): three different sets of images."""
    d, eval_tf = cfg.data, build_eval_transform(pre)
    note = _cache_note(d)
    if note:
        echo(note)
    own_val, cache = d.val is None, FolderCache()  # a carved val decodes nothing twice
    train_raw = _open_split(d.train, "train", None, cfg, carve_val=own_val, cache=cache)
    val_ds = _open_split(d.val or d.train, "val", eval_tf, cfg, carve_val=own_val, cache=cache)
    if own_val and "val" not in native_splits(d.train):
        echo(f"validation: a seeded, stratified {d.val_fraction:g} of each class carved from {d.train}'s training "
             f"split ({len(val_ds)} images; data.val_fraction, data.split_seed={d.split_seed}); training on the other "
             f"{len(train_raw)}")
    test_ds = None
    if d.test == "auto" and "test" in native_splits(d.train):
        test_ds = _open_split(d.train, "test", eval_tf, cfg, carve_val=True, cache=cache)
    elif d.test not in (None, "auto"):
        test_ds = _open_split(d.test, "test", eval_tf, cfg, carve_val=False, cache=cache)
    return train_raw, val_ds, test_ds


def _prepare(cfg: TrainConfig, echo: Callable[[str], None] = print) -> _Prepared:
    """Build the model and open the data; raise on any bad input before anything is written."""
    device = resolve_device(cfg.device)
    resolve_precision(cfg.precision, device)  # a bad value fails here, before any data is opened
    seed_everything(cfg.seed)  # the model's initial weights are a function of the seed
    probe = create_model(cfg.model, **cfg.model_args)  # validates the name and options early
    pre = Preprocess.from_config(probe.config)
    train_raw, val_ds, test_ds = _open_data(cfg, pre, echo)
    classes = list(train_raw.classes)
    for role, ds in (("validation", val_ds), ("test", test_ds)):
        if ds is not None and list(ds.classes) != classes:
            extra, missing = sorted(set(ds.classes) - set(classes)), sorted(set(classes) - set(ds.classes))
            raise DataError(f"{role} classes differ from training classes: extra {extra}, missing {missing}")
    if len(train_raw) < cfg.data.batch_size and cfg.data.drop_last:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the {len(train_raw)} training "
                          "images and drop_last is on: no batch would run")
    if "num_classes" in cfg.model_args and cfg.model_args["num_classes"] != len(classes):
        raise ConfigError(f"model_args.num_classes={cfg.model_args['num_classes']} but the data has {len(classes)} classes")
    if probe.num_classes != len(classes):
        seed_everything(cfg.seed)
        probe = create_model(cfg.model, **{**cfg.model_args, "num_classes": len(classes)})
    if cfg.init.weights or cfg.init.pretrained:
        from vitlab.weights.hub import load_weights_into

        # the weights' own eps / activation win over the preset's; ones set in model_args win over both
        numerics = {k: cfg.model_args[k] for k in ("norm_eps", "act") if k in cfg.model_args}
        load_weights_into(probe, cfg.model, pretrained=cfg.init.pretrained, weights=cfg.init.weights,
                          resample=cfg.init.resample, numerics=numerics)
    if cfg.init.whiten_images:
        _whiten_stem(probe, train_raw, pre, cfg.init.whiten_images, cfg.seed, echo)
    aug = AugmentConfig(**dataclasses.asdict(cfg.data.augment))
    train_ds = SeededTransform(train_raw, build_train_transform(pre, aug), cfg.seed)
    # timed on a copy inside fork_rng: the weights and random streams stay as seeded above
    precision = resolve_train_precision(cfg.precision, device, probe, (pre.in_chans, *pre.img_size),
                                        cfg.data.batch_size, distributed.from_environment().world_size > 1, echo)
    return _Prepared(probe, train_ds, val_ds, test_ds, classes, device, precision)


def _whiten_stem(model: torch.nn.Module, train_raw: Dataset, pre: Preprocess, n: int, seed: int,
                 echo: Callable[[str], None]) -> None:
    """init.whiten_images: the image's first conv whitens the patches of ``n`` seeded training images.

    Training images only (never the carved val), through the eval transform (resize + normalise, no
    augmentation); a generator of its own, so the model's other weights and every random stream stay
    as the seed made them.
    """
    try:
        conv = first_image_conv(model, pre.in_chans)
    except ValueError as e:
        raise ConfigError(f"init.whiten_images: {e}") from None
    idx = torch.randperm(len(train_raw), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    tf = build_eval_transform(pre)
    batches = (torch.stack([tf(train_raw[i][0]) for i in idx[j:j + 256]]) for j in range(0, len(idx), 256))
    pairs = whiten_conv_(conv, batches)  # batches of (<= 256, C, H, W): memory bounded at any resolution
    echo(f"init.whiten_images: the first conv ({conv.out_channels} filters, {conv.kernel_size[0]}x{conv.kernel_size[1]}"
         f" stride {conv.stride[0]}) starts as {pairs} whitening filter pairs of {len(idx)} training images' patches")


def schedule_from_config(o: OptimSettings, epochs: int, steps_per_epoch: int) -> Schedule:
    """The run's :class:`Schedule` in steps: epochs (warmup, decay_epochs, milestones) times ``steps_per_epoch``."""
    def steps(e: float) -> int:
        return max(1, round(e * steps_per_epoch))

    return Schedule(o.schedule, epochs * steps_per_epoch, int(o.warmup_epochs * steps_per_epoch), o.min_lr / o.lr,
                    None if o.warmup_lr is None else o.warmup_lr / o.lr, steps(o.decay_epochs), o.decay_rate,
                    tuple(steps(m) for m in o.decay_milestones), o.poly_power)


def _task(cfg: TrainConfig, prep: _Prepared) -> ClassificationTask:
    mixup = None
    if cfg.mixup.mixup_alpha > 0 or cfg.mixup.cutmix_alpha > 0:
        mixup = MixupCutmix(len(prep.classes), cfg.mixup.mixup_alpha, cfg.mixup.cutmix_alpha, cfg.mixup.prob,
                            cfg.mixup.switch_prob, cfg.optim.label_smoothing)
    return ClassificationTask(prep.train_ds, prep.val_ds, prep.classes, cfg.optim.label_smoothing, mixup,
                              cfg.data.eval_batch_size, cfg.data.workers, cfg.max_eval_images, cfg.data.drop_last,
                              tta=cfg.tta)


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    allow_changes: tuple[str, ...] = (),
) -> TrainResult:
    """Run (or continue) training as configured; returns the best and last validation metrics."""
    info = distributed.from_environment()
    say = echo if info.is_main else (lambda s: None)
    source = cfg.data.train or ""
    cfg, note = resolve_auto_augment(cfg, photo_source(source), _augment_kind(source))  # config.yaml states the choice
    if note:
        say(note)
    run = RunDir(out)
    if resume and cfg.precision == "auto":
        cfg = dataclasses.replace(cfg, precision=saved_precision(run.config))  # the run's own choice, not a new timing
    prep = _prepare(cfg, say)
    cfg = dataclasses.replace(cfg, precision=prep.precision)  # config.yaml records what auto chose
    if info.is_main:
        if resume:
            check_resume_config(run.config, cfg, TrainConfig, RESUME_SAFE, allow_changes, say)
        run = claim_run_dir(out, overwrite=overwrite, resume=resume)
    device = distributed.init(info, prep.device)
    distributed.barrier(info)
    o = cfg.optim

    def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(model, o.name, o.lr, o.weight_decay, o.momentum, o.betas, o.layer_decay)

    def make_schedule(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
        schedule = schedule_from_config(o, cfg.epochs, steps)
        late = schedule.unreached()
        if late:
            say(late)
        return lambda_scheduler(optimizer, schedule)

    try:
        result = fit(_task(cfg, prep), prep.model, settings_from_config(cfg, prep.precision), make_optimizer,
                     make_schedule, run, resume, device, info, progress and info.is_main, say,
                     lambda: save_config(cfg, run.config))
    finally:
        distributed.shutdown(info)
    if result.exit_code == 0 and info.is_main and prep.test_ds is not None:
        result.test_metrics = evaluate_on_test(run, prep.test_ds, cfg, prep.device, prep.precision, say)
    return result


def evaluate_on_test(run: RunDir, test_ds: Dataset, cfg: TrainConfig, device: torch.device, precision: str,
                     echo: Callable[[str], None]) -> dict[str, float]:
    """Score the checkpoint chosen on validation (best, else last) once on the test split; log it."""
    from vitlab.api import load_checkpoint

    which = "best" if run.weights("best").is_file() else "last"
    ckpt = load_checkpoint(run.weights(which), device)
    task = ClassificationTask(test_ds, test_ds, ckpt.class_names, eval_batch_size=cfg.data.eval_batch_size,
                              workers=cfg.data.workers, tta=cfg.tta)
    metrics = task.evaluate(ckpt.model, device, precision, distributed.DistInfo(), "test_")
    run.log({"kind": "test", "checkpoint": f"{which}.safetensors", "epoch": ckpt.info.get("epoch"),
             "step": ckpt.info.get("step"), "images": len(test_ds), "tta": cfg.tta, **metrics})  # type: ignore[arg-type]
    tta = "" if cfg.tta == "none" else f", tta {cfg.tta}"
    echo(f"test ({len(test_ds)} images, {which} checkpoint chosen on validation{tta}): top-1 {metrics['test_top1']:.2f}%, "
         f"top-5 {metrics['test_top5']:.2f}%, loss {metrics['test_loss']:.4f}")
    return metrics
