"""``vitlab eval``: top-1 / top-5, per-class accuracy and a confusion matrix for a checkpoint."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import click

from vitlab.cli.tta_option import TTA_OPTION, resolve_tta


@click.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="'mnist' / 'mnist-test', an image folder, or torchvision:NAME.")
@click.option("--split", type=click.Choice(["auto", "test", "val", "train"]), default="auto", show_default=True,
              help="auto: the source's test split when it has one, else its validation split (said in the output).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16", "int8"]), default="fp32", show_default=True,
              help="fp32 is the reference; auto measures bf16 against fp32 here once (cached) and says what it chose; "
              "int8: --runtime onnxruntime (dynamic quantization).")
@click.option("--runtime", type=click.Choice(["eager", "compiled", "onnxruntime", "openvino", "auto"]), default="eager",
              show_default=True, help="Inference runtime (auto: the fastest here at --batch-size, measured once, cached).")
@TTA_OPTION
@click.option("--out", type=click.Path(file_okay=False), help="Write metrics.json, per_class.csv, confusion.csv/png here.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--probe", "probes", multiple=True, type=click.Choice(["fewshot", "knn"]),
              help="Also evaluate frozen features: few-shot ridge probes and/or weighted k-NN (repeatable).")
@click.option("--probe-train", help="Training source for the probes (default: --data's train split).")
@click.option("--shots", default="1,5,10,25", show_default=True, help="Examples per class for --probe fewshot.")
@click.option("--knn-k", type=click.IntRange(min=1), default=20, show_default=True)
def eval_cmd(checkpoint, data, split, batch_size, workers, device, precision, runtime, tta, out, as_json, probes,
             probe_train, shots, knn_k) -> None:
    """Evaluate CHECKPOINT (a vitlab .safetensors) on a dataset."""
    from torch.utils.data import DataLoader

    from vitlab.data import ImageFolderDataset, create_transform, open_source
    from vitlab.api import load_checkpoint
    from vitlab.evaluation.inference import evaluate
    from vitlab.errors import DataError
    from vitlab.utils.atomic import probe_writable, writing
    from vitlab.utils.device import resolve_device, resolve_precision

    if out:
        probe_writable(out, "--out")  # before the model is loaded or any image is read
    dev = resolve_device(device)
    prec = precision if precision == "int8" else resolve_precision(precision, dev, purpose="infer")
    if runtime != "auto":
        from vitlab.runtime.availability import require

        require(runtime, prec, dev)  # an unavailable runtime stops here, before the data is read
    ckpt = load_checkpoint(checkpoint, dev)
    tta = resolve_tta(tta, ckpt.info)
    if split == "auto":
        from vitlab.data.sources import native_splits

        split = "test" if "test" in native_splits(data) else "val"
    ds = open_source(data, split, create_transform(ckpt.model))  # the weights' own preprocessing
    if isinstance(ds, ImageFolderDataset):
        ds.verify()
    if list(ds.classes) != list(ckpt.class_names):
        raise DataError(f"{data}: classes {list(ds.classes)[:10]} differ from the checkpoint's {ckpt.class_names[:10]}")
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers)
    from vitlab.utils.progress import shows

    # A bar (rate, ETA) on a terminal stderr only: never with --json, never into a log file.
    classifier = _classifier(ckpt, runtime, prec, min(batch_size, len(ds)), dev)  # no padding past the data
    meter = evaluate(classifier, loader, dev, prec, len(ckpt.class_names), progress=shows(as_json), desc="eval",
                     tta=tta)
    metrics = {**meter.result(), "images": meter.count, "checkpoint": str(checkpoint), "data": data, "split": split,
               "runtime": runtime if runtime == "eager" else classifier.name, "precision": prec, "tta": tta}
    if probes:
        metrics["probe"] = _run_probes(ckpt, ds, probe_train or data, probes, shots, knn_k, batch_size, workers, dev)
    per_class = meter.per_class_accuracy().tolist()
    if out:
        with writing(out, "--out"):
            _write_outputs(Path(out), metrics, per_class, meter, ckpt.class_names)
    if as_json:
        click.echo(json.dumps({**metrics, "per_class": dict(zip(ckpt.class_names, per_class))}))
        return
    how = f"{split} split" if tta == "none" else f"{split} split, tta {tta}"
    click.echo(f"{metrics['images']} images ({how}): top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  "
               f"loss {metrics['loss']:.4f}  ECE {metrics['ece']:.2f}%")
    for name, value in metrics.get("probe", {}).items():
        click.echo(f"{name}: {value:.2f}%")
    if len(ckpt.class_names) <= 50:
        click.echo("per-class top-1: " + "  ".join(f"{n}:{a:.1f}" for n, a in zip(ckpt.class_names, per_class)))
    if out:
        click.echo(f"wrote {out} (4 files: metrics.json, per_class.csv, confusion.csv, confusion.png)")


def _classifier(ckpt, runtime: str, precision: str, batch_size: int, device):
    """The model itself for eager, else the runtime's Predictor; which one is said on stderr."""
    if runtime == "eager":
        return ckpt.model
    from vitlab.runtime import load_runtime

    predictor = load_runtime(ckpt, runtime, precision, batch_size=batch_size, device=device)
    click.echo(predictor.note, err=True)
    return predictor


def _write_outputs(out_dir: Path, metrics: dict, per_class: list[float], meter, class_names: list[str]) -> None:
    """metrics.json, per_class.csv, confusion.csv and confusion.png in ``out_dir``."""
    from vitlab.evaluation.plots import save_confusion_png

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps({**metrics, "per_class": dict(zip(class_names, per_class))}, indent=2))
    with (out_dir / "per_class.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "accuracy", "support"])
        for name, acc, sup in zip(class_names, per_class, meter.confusion.sum(1).tolist()):
            w.writerow([name, f"{acc:.4f}" if not math.isnan(acc) else "", sup])
    with (out_dir / "confusion.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true\\pred", *class_names])
        for name, row in zip(class_names, meter.confusion.tolist()):
            w.writerow([name, *row])
    save_confusion_png(meter.confusion, class_names, out_dir / "confusion.png")


def _run_probes(ckpt, test_ds, train_source: str, probes: tuple[str, ...], shots: str, k: int, batch_size: int,
                workers: int, device) -> dict[str, float]:
    """Frozen-feature probes: train features from ``train_source``'s train split, test on ``test_ds``."""
    from torch.utils.data import DataLoader

    from vitlab.data import create_transform, open_source
    from vitlab.errors import ConfigError, DataError
    from vitlab.evaluation.probe import extract_features, few_shot_accuracy, knn_accuracy

    try:
        shot_list = [int(s) for s in shots.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--shots {shots!r}: expected comma-separated integers, e.g. 1,5,10,25") from None
    train_ds = open_source(train_source, "train", create_transform(ckpt.model))
    if list(train_ds.classes) != list(test_ds.classes):
        raise DataError(f"--probe-train {train_source}: classes differ from the evaluation data's")
    n = len(ckpt.class_names)
    tr_x, tr_y = extract_features(ckpt.model, DataLoader(train_ds, batch_size=batch_size, num_workers=workers), device)
    te_x, te_y = extract_features(ckpt.model, DataLoader(test_ds, batch_size=batch_size, num_workers=workers), device)
    out: dict[str, float] = {}
    if "fewshot" in probes:
        for shot, acc in few_shot_accuracy(tr_x, tr_y, te_x, te_y, n, shot_list).items():
            out[f"fewshot_{shot}shot_top1"] = acc
    if "knn" in probes:
        out[f"knn{k}_top1"] = knn_accuracy(tr_x, tr_y, te_x, te_y, n, k)
    return out
