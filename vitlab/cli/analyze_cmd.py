"""``vitlab analyze``: the ViT and DeepViT papers' attention figures for any model, as PNGs + summary.json.

``outliers`` (also in ``all``): high-norm patch tokens per layer (Darcet et al. 2024), with
``--compare OTHER_MODEL`` beside (e.g. the same model with registers).

On a DETR (checkpoint or preset name) it draws the DETR paper's figures instead: ``encoder``
(self-attention of reference positions over the image) and ``decoder`` (each predicted object's
cross-attention over the image); ``maps`` and ``all`` give both.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

WHAT = ("maps", "rollout", "distance", "collapse", "entropy", "posembed", "filters", "outliers", "encoder", "decoder",
        "all")
DETR_WHAT = {"maps": ("encoder", "decoder"), "all": ("encoder", "decoder"), "encoder": ("encoder",),
             "decoder": ("decoder",)}


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
        click.option("--collapse-similarity", type=click.Choice(["raw", "centered"]), default="raw", show_default=True,
                     help="Collapse: cosine of the maps (DeepViT's Eq. 3), or of the maps minus uniform 1/T (as study "
                          "collapse reports; near-uniform maps are then not 'similar')."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars (they show only on a terminal anyway)."),
        click.option("--maps", "which", type=click.Choice(["effective", "softmax", "mixed"]), default="effective",
                     show_default=True, help="Which maps: post-mixing where a layer mixes heads (re-attention), "
                                             "else the softmax; or always the softmax."),
        click.option("--show", type=click.IntRange(min=1), default=4, show_default=True,
                     help="Images drawn with per-head maps."),
        click.option("--outlier-factor", type=click.FloatRange(1.0, min_open=True), default=2.0, show_default=True,
                     help="Outliers: a patch token whose norm exceeds this multiple of the 90th percentile of "
                          "the patch norms of its image and layer."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def make_options(head_fusion, discard_ratio, distance_prefix, collapse_threshold, head_threshold, which, show,
                 collapse_similarity="raw", quiet=False,
                 outlier_factor=2.0):
    from vitlab.analysis import AnalysisOptions

    return AnalysisOptions(head_fusion=head_fusion, discard_ratio=discard_ratio, distance_prefix=distance_prefix,
                           collapse_threshold=collapse_threshold, head_threshold=head_threshold, which=which, show=show,
                           collapse_similarity=collapse_similarity,
                           outlier_factor=outlier_factor)


@click.command("analyze")
@click.argument("what", type=click.Choice(WHAT))
@click.option("--model", "model_spec", required=True, help="A vitlab checkpoint (.safetensors) or a registered model name.")
@click.option("--images", multiple=True, help="Image files, folders or a data source (mnist-test, torchvision:NAME); repeatable.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the PNGs and summary.json.")
@click.option("--limit", type=click.IntRange(min=1), default=16, show_default=True, help="Images analysed at most.")
@click.option("--img-size", type=click.IntRange(min=1), help="Input side for a registered model (or to resample a checkpoint).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--compare", "compare_spec", help="Outliers: a second model (checkpoint or name) analysed on the same "
                                                "images and shown beside, e.g. the same model with registers.")
@analysis_options
def analyze_cmd(what, model_spec, images, out, limit, img_size, batch_size, device, compare_spec,
                **opts) -> None:
    """Compute WHAT (an analysis, or all) for a model and write figures to --out.

    For a DETR: encoder (self-attention of reference positions), decoder (cross-attention per
    predicted object), or maps / all for both.
    """
    from vitlab.analysis import collect_attention
    from vitlab.analysis.figures import ANALYSES, IMAGE_ANALYSES, image_figures, weight_figures
    from vitlab.analysis.inputs import load_images, load_model
    from vitlab.errors import ConfigError
    from vitlab.utils.atomic import probe_writable
    from vitlab.utils.device import resolve_device

    options = make_options(**opts)
    options.validate()
    probe_writable(out, "--out")  # before the model is loaded or any image is read
    dev = resolve_device(device)
    loaded = load_model(model_spec, img_size, dev)
    if loaded.is_detr:
        if compare_spec:
            raise ConfigError(f"--compare: outliers compare two ViTs; {loaded.name} is a DETR")
        return _analyze_detr(what, loaded, images, Path(out), limit, options.show, dev)
    if what in ("encoder", "decoder"):
        raise ConfigError(f"analyze {what}: DETR only; {loaded.name} is not a DETR")
    wanted = (*ANALYSES, "outliers") if what == "all" else (what,)
    if compare_spec and "outliers" not in wanted:
        raise ConfigError(f"--compare: applies to analyze outliers and analyze all, not {what}")
    needs_images = any(w in (*IMAGE_ANALYSES, "outliers") for w in wanted)
    if needs_images and not images:
        raise ConfigError(f"analyze {what}: needs --images (files, a folder or a source such as mnist-test)")
    figs, summary = [], {"model": loaded.name, "analyses": list(wanted)}
    if needs_images:
        imgs = load_images(images, loaded.preprocess, limit)
        if any(w in IMAGE_ANALYSES for w in wanted):
            stats = collect_attention(loaded.model, attention_batches(imgs, batch_size, opts["quiet"]), options, dev)
            figs += image_figures(wanted, stats, imgs.display, imgs.names)
            summary.update(stats.summary())
        summary["image_names"] = imgs.names
    if "outliers" in wanted:
        ofigs, summary["outliers"] = _outliers(loaded, imgs, compare_spec, (images, limit, img_size, batch_size),
                                               options, dev)
        figs += ofigs
    wfigs, notes = weight_figures(wanted, loaded.model)
    figs += wfigs
    if what != "all" and notes:
        raise ConfigError(notes[0])
    summary["notes"] = notes
    _write(Path(out), figs, summary)


def _outliers(loaded, imgs, compare_spec: str | None, feed: tuple, options, dev) -> tuple[list, dict]:
    """The outlier figures and summary of ``loaded``; with ``--compare``, a second model on the same images."""
    from vitlab.analysis.inputs import load_images, load_model
    from vitlab.analysis.outlier_figures import outlier_note, outlier_section
    from vitlab.errors import ConfigError

    images, limit, img_size, batch_size = feed
    other = None
    if compare_spec:
        o = load_model(compare_spec, img_size, dev)
        if o.is_detr:
            raise ConfigError(f"--compare {compare_spec}: a DETR; outliers compare two ViTs")
        other = (o.name, o.model, load_images(images, o.preprocess, limit))  # its own preprocessing
    figs, summary = outlier_section(loaded.model, loaded.name, imgs, options.outlier_factor, options.show, batch_size,
                                    dev, other)
    click.echo(f"outliers: {outlier_note(summary)}", err=True)
    return figs, summary


def attention_batches(imgs, batch_size: int, quiet: bool):
    """The image batches with a progress bar (rate, ETA) on stderr; shared with ``report``."""
    import math

    from vitlab.utils.progress import track

    return track(imgs.batches(batch_size), "attention", total=math.ceil(len(imgs) / batch_size), unit="batch",
                 quiet=quiet)


def _write(out_dir: Path, figs: list, summary: dict) -> None:
    from vitlab.utils.atomic import writing

    with writing(out_dir, "--out"):
        out_dir.mkdir(parents=True, exist_ok=True)
        for fig in figs:
            (out_dir / f"{fig.key}.png").write_bytes(fig.png)
        notes = {f.key: f.note for f in figs if getattr(f, "note", None)}  # e.g. near-uniform attention
        summary = {**summary, "figure_notes": notes} if notes else summary
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    for note in summary.get("notes", []):
        click.echo(f"skipped {note}", err=True)
    for fig in figs:  # near-uniform attention and the like: on the figure, and said here
        if getattr(fig, "note", None):
            click.echo(f"note: {fig.key}.png: {fig.note}", err=True)
    click.echo(f"wrote {out_dir} ({len(figs) + 1} files: " + ", ".join(f"{f.key}.png" for f in figs)
               + (", " if figs else "") + "summary.json)")


def _analyze_detr(what: str, loaded, images: tuple[str, ...], out_dir: Path, limit: int, show: int, dev) -> None:
    """DETR paper figures for the first ``show`` of at most ``limit`` images, one forward per image."""
    import torch

    from vitlab.analysis.detr_attention import detr_attention
    from vitlab.analysis.detr_figures import detr_figures, detr_summary
    from vitlab.analysis.inputs import _display
    from vitlab.data.files import collect_image_files, open_image
    from vitlab.detection.transforms import build_eval_transform
    from vitlab.errors import ConfigError

    if what not in DETR_WHAT:
        raise ConfigError(f"analyze {what}: not for a DETR; choose encoder, decoder, maps or all")
    if not images:
        raise ConfigError(f"analyze {what}: needs --images (image files or folders)")
    cfg = loaded.model.config
    transform = build_eval_transform(cfg.mean, cfg.std, cfg.min_size, cfg.max_size)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    paths = collect_image_files(images)[: min(limit, show)]
    figs, rows = [], []
    for i, path in enumerate(paths):
        x, _ = transform(open_image(path), empty)
        att = detr_attention(loaded.model, x[None].to(dev))
        figs += detr_figures(DETR_WHAT[what], att, _display(x, cfg), str(path), i, loaded.class_names)
        rows.append({"image": str(path), **detr_summary(att, loaded.class_names)})
    notes = ["encoder: this DETR has no encoder layers"] if "encoder" in DETR_WHAT[what] and not cfg.enc_layers else []
    summary = {"model": loaded.name, "analyses": list(DETR_WHAT[what]), "images": rows, "notes": notes}
    _write(out_dir, figs, summary)
