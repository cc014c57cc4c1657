"""``vitlab detect``: train, evaluate and run DETR detectors (COCO-format or synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vitlab.cli.recipe_option import config_callback




@click.group("detect")
def detect_cmd() -> None:
    """Object detection with DETR: train | eval | predict | models."""


@detect_cmd.command("train")
@click.option("--config", "config_file", callback=config_callback, metavar="NAME|PATH",
              help="YAML recipe: a file, or a built-in recipe name such as detr_shapes (`vitlab recipes`).")
@click.option("--model", help="DETR preset (detr_resnet50, detr_vit_pico_128, ...).")
@click.option("--data", "train_data", help="'shapes[:N[:SIZE]]' (synthetic) or a COCO-layout folder.")
@click.option("--val", "val_data", help="Validation source (default: the training source's val split).")
@click.option("--val-split", type=click.Choice(["val", "train"]),
              help="Split of the validation source (default val); 'train' measures how well the training set is fit.")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--workers", type=int)
@click.option("--device", help="auto, cpu, cuda, cuda:N, mps.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]))
@click.option("--seed", type=int)
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override any config field, e.g. --set optim.lr_backbone=0 (repeatable).")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (default runs/<model>).")
@click.option("--resume", default=None, metavar="RUN_DIR|auto", help="Continue a run from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing non-empty --out folder.")
@click.option("--allow-change", "allow_changes", multiple=True, metavar="FIELD",
              help="With --resume: accept a changed config field (e.g. epochs); it applies from the resume step.")
@click.option("--smoke", is_flag=True, help="Apply the recipe's smoke settings (runs in seconds).")
@click.option("--no-progress", is_flag=True)
def train_cmd(config_file, model, train_data, val_data, val_split, epochs, batch_size, lr, workers, device, precision,
              seed, assignments, out, resume, overwrite, allow_changes, smoke, no_progress) -> None:
    """Train a DETR; writes config.yaml, metrics.jsonl and checkpoints/ into the run folder."""
    from vitlab.config import parse_assignment
    from vitlab.detection.config import resolve_detect_config
    from vitlab.cli.failures import run_failures
    from vitlab.cli.resume_args import probe_run_folder, resolve_resume
    from vitlab.detection.trainer import train

    flags = {"model": model, "epochs": epochs, "seed": seed, "device": device, "precision": precision}
    data = {"train": train_data, "val": val_data, "val_split": val_split, "batch_size": batch_size, "workers": workers}
    overrides = [{k: v for k, v in flags.items() if v is not None},
                 {"data": {k: v for k, v in data.items() if v is not None}},
                 {"optim": {"lr": lr} if lr is not None else {}}]
    overrides += [parse_assignment(a) for a in assignments]
    resuming, out, config_file = resolve_resume(resume, out, config_file, overwrite)
    cfg = resolve_detect_config(config_file, overrides, smoke=smoke and not resuming)
    out = out or f"runs/{cfg.model}"
    probe_run_folder(out, resuming)  # before the data is read
    with run_failures(out, "detect train"):
        result = train(cfg, out, resume=resuming, overwrite=overwrite, progress=not no_progress, echo=click.echo,
                       allow_changes=tuple(allow_changes))
    if result.exit_code:
        raise SystemExit(result.exit_code)
    if result.is_main and result.best_epoch >= 0:
        click.echo(f"best {result.best_metric} {result.best_value:.1f} at epoch {result.best_epoch + 1}; "
                   f"{result.seconds:.1f}s; run folder {result.run_dir}")


def _load(checkpoint: str, device: str):
    from vitlab.api import load_checkpoint
    from vitlab.errors import CheckpointError
    from vitlab.models.detr import DETR
    from vitlab.utils.device import resolve_device

    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, dev)
    if not isinstance(ckpt.model, DETR):
        raise CheckpointError(f"{checkpoint}: not a DETR checkpoint (use `vitlab eval` / `vitlab predict`)")
    return ckpt, dev


@detect_cmd.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="'shapes[:N[:SIZE]]' or a COCO-layout folder.")
@click.option("--split", type=click.Choice(["val", "train"]), default="val", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="Write metrics.json and detections.json here.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def eval_cmd(checkpoint, data, split, batch_size, device, out, as_json) -> None:
    """COCO box mAP of CHECKPOINT (a vitlab DETR .safetensors) on a dataset."""
    from torch.utils.data import DataLoader

    from vitlab.detection.coco_eval import coco_map
    from vitlab.detection.collate import collate_detection
    from vitlab.detection.evaluate import evaluate
    from vitlab.detection.sources import open_detection_source
    from vitlab.detection.transforms import build_eval_transform
    from vitlab.errors import DataError
    from vitlab.utils.atomic import probe_writable, writing

    if out:
        probe_writable(out, "--out")  # before the model is loaded or any image is read
    ckpt, dev = _load(checkpoint, device)
    cfg = ckpt.model.config
    ds = open_detection_source(data, split, build_eval_transform(cfg.mean, cfg.std, cfg.min_size, cfg.max_size))
    if list(ds.classes) != list(ckpt.class_names):
        raise DataError(f"{data}: classes {list(ds.classes)[:5]}... differ from the checkpoint's {ckpt.class_names[:5]}...")
    loader = DataLoader(ds, batch_size=batch_size, collate_fn=collate_detection)
    stats, results = evaluate(ckpt.model, None, loader, dev, "fp32", progress=not as_json)
    metrics = {**coco_map(ds.coco_ground_truth(), results), "images": len(ds), "bad_pred_boxes": stats["val_bad_pred_boxes"],
               "checkpoint": str(checkpoint), "data": data, "split": split}
    if out:
        with writing(out, "--out"):
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / "metrics.json").write_text(json.dumps(metrics, indent=2))
            (Path(out) / "detections.json").write_text(json.dumps(results))
    if as_json:
        click.echo(json.dumps(metrics))
        return
    fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    click.echo(f"{len(ds)} images: AP {fmt(metrics['AP'])}  AP50 {fmt(metrics['AP50'])}  AP75 {fmt(metrics['AP75'])}  "
               f"APs/m/l {fmt(metrics['APs'])}/{fmt(metrics['APm'])}/{fmt(metrics['APl'])}  AR100 {fmt(metrics['AR100'])}")
    if stats["val_bad_pred_boxes"]:
        click.echo(f"warning: {stats['val_bad_pred_boxes']} non-finite or inverted predicted boxes were replaced")


@detect_cmd.command("predict")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False), help="Write each image with its labelled boxes here (PNG).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Minimum score.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--device", default="auto", show_default=True)
def predict_cmd(checkpoint, images, out, threshold, fmt, device) -> None:
    """Detect objects in IMAGES (files or folders) with CHECKPOINT; --out draws the boxes."""
    import torch

    from vitlab.data.files import collect_image_files, open_image
    from vitlab.detection.draw import draw_detections
    from vitlab.detection.transforms import build_eval_transform
    from vitlab.models.detr import postprocess
    from vitlab.utils.atomic import probe_writable, writing

    if out:
        probe_writable(out, "--out")  # before the model is loaded or any image is read
    ckpt, dev = _load(checkpoint, device)
    model, names = ckpt.model.eval(), ckpt.class_names
    cfg = model.config
    transform = build_eval_transform(cfg.mean, cfg.std, cfg.min_size, cfg.max_size)
    rows = []
    if out:
        with writing(out, "--out"):
            Path(out).mkdir(parents=True, exist_ok=True)
    for path in collect_image_files(images):
        image = open_image(path)
        empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        x, _ = transform(image, empty)
        with torch.no_grad():
            det = postprocess(model(x[None].to(dev)), torch.tensor([[image.height, image.width]]), threshold)[0]
        order = det["scores"].argsort(descending=True)
        dets = [{"class": names[l], "score": round(float(s), 4), "box_xyxy": [round(v, 1) for v in b]}
                for b, l, s in zip(det["boxes"][order].tolist(), det["labels"][order].tolist(), det["scores"][order].tolist())]
        rows.append({"image": str(path), "detections": dets})
        if out:
            drawn = draw_detections(image, det["boxes"][order].tolist(), det["labels"][order].tolist(),
                                    det["scores"][order].tolist(), names)
            with writing(Path(out) / f"{path.stem}.png", "--out"):
                drawn.save(Path(out) / f"{path.stem}.png")
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            tags = ", ".join(f"{d['class']} {d['score']:.2f}" for d in r["detections"]) or "(nothing above threshold)"
            click.echo(f"{r['image']}: {tags}")
    if out:
        click.echo(f"wrote {len(rows)} annotated image(s) to {out}", err=fmt == "json")


@detect_cmd.command("models")
def models_cmd() -> None:
    """List the DETR presets (names for --model) with their backbone and size."""
    import torch

    from vitlab.models.detr import PRESETS, create_detr

    for name in sorted(PRESETS):
        with torch.device("meta"):
            model = create_detr(name)
        c = model.config
        n = sum(p.numel() for p in model.parameters())
        click.echo(f"{name:<28} backbone {c.backbone:<22} width {c.hidden_dim:>3}, {c.enc_layers}+{c.dec_layers} layers, "
                   f"{c.num_queries} queries, {n / 1e6:6.2f}M parameters, images <= {c.max_size}px")
