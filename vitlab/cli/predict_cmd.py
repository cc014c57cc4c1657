"""``vitlab predict``: top-k classes for images, as a table, JSON or CSV, and an annotated grid."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import click

from vitlab.cli.tta_option import TTA_OPTION, resolve_tta


def _display(raw) -> "object":
    """A raw dataset item (PIL image or uint8 (C, H, W) tensor) as an HxW or HxWx3 uint8 array."""
    import numpy as np
    import torch

    if isinstance(raw, torch.Tensor):
        arr = raw.numpy()
        return arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
    return np.asarray(raw)


@click.command("predict")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1)
@click.option("--data", help="Predict on a dataset's val split instead of files ('mnist-test', a folder, ...).")
@click.option("--limit", type=click.IntRange(min=1), default=16, show_default=True, help="Images taken from --data.")
@click.option("--topk", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--grid", type=click.Path(dir_okay=False), help="Write an annotated image grid (PNG) here.")
@click.option("--device", default="auto", show_default=True)
@click.option("--max-image-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse images whose header announces more pixels (default: $VITLAB_MAX_IMAGE_PIXELS, "
                   "else Pillow's 89,478,485).")
@click.option("--runtime", type=click.Choice(["eager", "compiled", "onnxruntime", "openvino", "auto"]), default="eager",
              show_default=True, help="Inference runtime (auto: the fastest here, measured once and cached).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16", "int8"]), default="fp32",
              show_default=True, help="fp32 is the reference; auto measures bf16 against fp32 here once (cached) and says what it chose; "
              "int8: --runtime onnxruntime (dynamic quantization).")
@TTA_OPTION
def predict_cmd(checkpoint, images, data, limit, topk, fmt, grid, device, max_image_pixels, runtime, precision,
                tta) -> None:
    """Predict the classes of IMAGES (files or folders) with CHECKPOINT.

    An image that cannot be read (not an allowed format, over the pixel limit, truncated) is
    reported on stderr, one line each; the others are predicted, then the command exits with 3.
    """
    import torch

    from vitlab.data import create_transform
    from vitlab.api import load_checkpoint
    from vitlab.errors import ConfigError, DataError
    from vitlab.evaluation.plots import prediction_caption, save_prediction_grid
    from vitlab.evaluation.tta import tta_logits
    from vitlab.utils.atomic import probe_writable, writing
    from vitlab.utils.device import resolve_device

    if bool(images) == bool(data):
        raise ConfigError("give image files / folders or --data SOURCE (exactly one of them)")
    if grid:
        probe_writable(Path(grid).parent, "--grid")  # before the model is loaded or any image is read
    dev = resolve_device(device)
    prec = _precision(runtime, precision, dev)  # an unavailable runtime stops here, before any file is read
    ckpt = load_checkpoint(checkpoint, dev)
    model, classes = ckpt.model.eval(), ckpt.class_names
    tta = resolve_tta(tta, ckpt.info)
    transform = create_transform(model)  # the weights' own preprocessing (pretrained_cfg), as timm's
    names, raws, truths, bad = _gather(images, data, limit, max_image_pixels)
    predictor = _predictor(ckpt, runtime, prec, dev, len(raws)) if raws else None
    k = min(topk, len(classes))
    rows = []
    with torch.no_grad():
        for start in range(0, len(raws), 64):
            batch = torch.stack([transform(r) for r in raws[start:start + 64]])
            probs = tta_logits(predictor, batch, tta).softmax(dim=1)
            p, i = probs.topk(k, dim=1)
            for j in range(batch.shape[0]):
                n = start + j
                rows.append({"image": names[n], "truth": truths[n],
                             "top": [{"class": classes[c], "prob": float(q)} for q, c in zip(p[j].tolist(), i[j].tolist())]})
    _emit(rows, fmt)
    if grid and rows:
        titles = [prediction_caption(r["top"][0]["class"], r["top"][0]["prob"], r["truth"]) for r in rows]
        correct = [None if r["truth"] is None else r["truth"] == r["top"][0]["class"] for r in rows]
        with writing(grid, "--grid"):
            Path(grid).parent.mkdir(parents=True, exist_ok=True)
            save_prediction_grid([_display(r) for r in raws], titles, grid, correct)
        click.echo(f"wrote {grid} ({len(rows)} images)", err=fmt != "table")  # stderr: keeps --format json clean
    if bad:
        raise DataError(f"{bad} of {bad + len(raws)} images could not be read (listed above); "
                        f"predicted the other {len(raws)}")


def _precision(runtime: str, precision: str, device) -> str:
    """``--precision`` resolved, and checked against ``--runtime`` here (one-line error if it cannot run)."""
    from vitlab.runtime.availability import require
    from vitlab.utils.device import resolve_precision

    prec = precision if precision == "int8" else resolve_precision(precision, device, purpose="infer")
    if runtime != "auto":
        require(runtime, prec, device)
    return prec


def _predictor(ckpt, runtime: str, precision: str, device, count: int):
    """The runtime's Predictor at the batch predict runs (at most 64); says on stderr which runtime."""
    from vitlab.runtime import load_runtime

    predictor = load_runtime(ckpt, runtime, precision, batch_size=min(64, count), device=device)
    if runtime != "eager":
        click.echo(predictor.note, err=True)
    return predictor


def _gather(images, data, limit: int, max_pixels: int | None) -> tuple[list, list, list, int]:
    """(names, raw images, truths, number unreadable); each unreadable image is one line on stderr."""
    from vitlab.data import open_source
    from vitlab.data.bad_samples import ImagePolicy
    from vitlab.data.files import collect_image_files, open_image
    from vitlab.errors import DataError

    names, raws, truths, bad, classes = [], [], [], 0, []
    if data:
        ds = open_source(data, "val", None, policy=ImagePolicy(max_pixels, strict=True))
        classes = list(ds.classes)
        step = max(1, len(ds) // limit)  # spread the picks over the set, not only its first class
        picks = [(f"{data}[{idx}]", lambda i=idx: ds[i]) for idx in list(range(0, len(ds), step))[:limit]]
    else:
        picks = [(str(p), lambda p=p: (open_image(p, max_pixels), None)) for p in collect_image_files(images)]
    for name, load in picks:
        try:
            raw, label = load()
        except DataError as err:
            click.echo(f"skipped: {err}", err=True)
            bad += 1
            continue
        names.append(name)
        raws.append(raw)
        truths.append(None if label is None else classes[label])
    return names, raws, truths, bad


def _emit(rows: list[dict], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        k = len(rows[0]["top"]) if rows else 0
        w.writerow(["image", "truth", *[f"{h}{i + 1}" for i in range(k) for h in ("class", "prob")]])
        for r in rows:
            w.writerow([r["image"], r["truth"] or "", *[v for t in r["top"] for v in (t["class"], f"{t['prob']:.6f}")]])
        click.echo(buf.getvalue(), nl=False)
    else:
        width = max([len(r["image"]) for r in rows] + [5])
        for r in rows:
            tops = "  ".join(f"{t['class']} {100 * t['prob']:5.1f}%" for t in r["top"])
            truth = f"  (true: {r['truth']})" if r["truth"] is not None else ""
            click.echo(f"{r['image']:<{width}}  {tops}{truth}")
