"""``vitlab predict``: top-k classes for images, as a table, JSON or CSV, and an annotated grid."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import click

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
def predict_cmd(checkpoint, images, data, limit, topk, fmt, grid, device) -> None:
    """Predict the classes of IMAGES (files or folders) with CHECKPOINT."""
    import torch

    from vitlab.data import Preprocess, build_eval_transform, open_source
    from vitlab.data.files import collect_image_files, open_image
    from vitlab.api import load_checkpoint
    from vitlab.errors import ConfigError
    from vitlab.evaluation.plots import save_prediction_grid
    from vitlab.utils.atomic import probe_writable, writing
    from vitlab.utils.device import resolve_device

    if bool(images) == bool(data):
        raise ConfigError("give image files / folders or --data SOURCE (exactly one of them)")
    if grid:
        probe_writable(Path(grid).parent, "--grid")  # before the model is loaded or any image is read
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, dev)
    model, classes = ckpt.model.eval(), ckpt.class_names
    transform = build_eval_transform(Preprocess.from_config(model.config))
    names, raws, truths = [], [], []
    if data:
        ds = open_source(data, "val", None)
        step = max(1, len(ds) // limit)  # spread the picks over the set, not only its first class
        for idx in list(range(0, len(ds), step))[:limit]:
            raw, label = ds[idx]
            names.append(f"{data}[{idx}]")
            raws.append(raw)
            truths.append(ds.classes[label])
    else:
        for path in collect_image_files(images):
            names.append(str(path))
            raws.append(open_image(path))
            truths.append(None)
    k = min(topk, len(classes))
    rows = []
    with torch.no_grad():
        for start in range(0, len(raws), 64):
            batch = torch.stack([transform(r) for r in raws[start:start + 64]]).to(dev)
            probs = model(batch).float().softmax(dim=1)
            p, i = probs.topk(k, dim=1)
            for j in range(batch.shape[0]):
                n = start + j
                rows.append({"image": names[n], "truth": truths[n],
                             "top": [{"class": classes[c], "prob": float(q)} for q, c in zip(p[j].tolist(), i[j].tolist())]})
    _emit(rows, fmt)
    if grid:
        titles = [f"{r['top'][0]['class']} {100 * r['top'][0]['prob']:.0f}%" for r in rows]
        correct = [None if r["truth"] is None else r["truth"] == r["top"][0]["class"] for r in rows]
        with writing(grid, "--grid"):
            Path(grid).parent.mkdir(parents=True, exist_ok=True)
            save_prediction_grid([_display(r) for r in raws], titles, grid, correct)
        click.echo(f"wrote {grid}", err=fmt != "table")


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
