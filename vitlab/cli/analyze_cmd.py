"""``vitlab analyze``: the ViT and DeepViT papers' attention figures for any model, as PNGs + summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import click

WHAT = ("maps", "rollout", "distance", "collapse", "entropy", "posembed", "filters", "all")


def analysis_options(f):
    """The options shared by ``analyze`` and ``report`` (parameters of the analyses)."""
    opts = [
        click.option("--head-fusion", type=click.Choice(["mean", "max", "min"]), default="mean", show_default=True,
                     help="Rollout: how heads are fused per layer."),
        click.option("--discard-ratio", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0, show_default=True,
                     help="Rollout: fraction of weakest attention entries dropped per layer."),
        click.option("--distance-prefix", type=click.Choice(["renormalize", "zero"]), default="renormalize",
                     show_default=True, help="Mean distance: drop the class token and renormalise rows, "
                                             "or count its attention as distance 0."),
        click.option("--collapse-threshold", type=click.FloatRange(-1.0, 1.0), default=0.8, show_default=True,
                     help="Collapse: adjacent blocks at least this similar count as similar."),
        click.option("--head-threshold", type=click.FloatRange(-1.0, 1.0), default=0.5, show_default=True,
                     help="Collapse: head pairs at least this similar count as similar."),
        click.option("--maps", "which", type=click.Choice(["effective", "softmax", "mixed"]), default="effective",
                     show_default=True, help="Which maps: post-mixing where a layer mixes heads (re-attention), "
                                             "else the softmax; or always the softmax."),
        click.option("--show", type=click.IntRange(min=1), default=4, show_default=True,
                     help="Images drawn with per-head maps."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def make_options(head_fusion, discard_ratio, distance_prefix, collapse_threshold, head_threshold, which, show):
    from vitlab.analysis import AnalysisOptions

    return AnalysisOptions(head_fusion=head_fusion, discard_ratio=discard_ratio, distance_prefix=distance_prefix,
                           collapse_threshold=collapse_threshold, head_threshold=head_threshold, which=which, show=show)


@click.command("analyze")
@click.argument("what", type=click.Choice(WHAT))
@click.option("--model", "model_spec", required=True, help="A vitlab checkpoint (.safetensors) or a registered model name.")
@click.option("--images", multiple=True, help="Image files, folders or a data source (mnist-test, torchvision:NAME); repeatable.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the PNGs and summary.json.")
@click.option("--limit", type=click.IntRange(min=1), default=16, show_default=True, help="Images analysed at most.")
@click.option("--img-size", type=click.IntRange(min=1), help="Input side for a registered model (or to resample a checkpoint).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", default="auto", show_default=True)
@analysis_options
def analyze_cmd(what, model_spec, images, out, limit, img_size, batch_size, device, **opts) -> None:
    """Compute WHAT (an analysis, or all) for a model and write figures to --out."""
    from vitlab.analysis import collect_attention
    from vitlab.analysis.figures import ANALYSES, IMAGE_ANALYSES, image_figures, weight_figures
    from vitlab.analysis.inputs import load_images, load_model
    from vitlab.errors import ConfigError
    from vitlab.utils.device import resolve_device

    wanted = ANALYSES if what == "all" else (what,)
    needs_images = any(w in IMAGE_ANALYSES for w in wanted)
    if needs_images and not images:
        raise ConfigError(f"analyze {what}: needs --images (files, a folder or a source such as mnist-test)")
    options = make_options(**opts)
    options.validate()
    dev = resolve_device(device)
    loaded = load_model(model_spec, img_size, dev)
    figs, summary = [], {"model": loaded.name, "analyses": list(wanted)}
    if needs_images:
        imgs = load_images(images, loaded.preprocess, limit)
        stats = collect_attention(loaded.model, imgs.batches(batch_size), options, dev)
        figs += image_figures(wanted, stats, imgs.display, imgs.names)
        summary.update(stats.summary())
        summary["image_names"] = imgs.names
    wfigs, notes = weight_figures(wanted, loaded.model)
    figs += wfigs
    if what != "all" and notes:
        raise ConfigError(notes[0])
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for fig in figs:
        (out_dir / f"{fig.key}.png").write_bytes(fig.png)
    summary["notes"] = notes
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    for note in notes:
        click.echo(f"skipped {note}", err=True)
    click.echo(f"wrote {len(figs)} figure(s) and summary.json to {out_dir}: "
               + ", ".join(f"{f.key}.png" for f in figs))
