"""``vitlab report``: one self-contained HTML page for a run folder or a checkpoint.

Training curves (metrics.jsonl), confusion matrix and predictions with rollout overlays on the
given images (when they carry labels), then every analysis of :mod:`vitlab.analysis.figures`,
each with a one-line explanation of how to read it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vitlab.analysis import plots
from vitlab.analysis.collect import AnalysisOptions, AttentionStats, collect_attention
from vitlab.analysis.figures import ANALYSES, EXPLAIN, TITLES, Figure, _png, image_figures, weight_figures
from vitlab.analysis.html import Section, render, table
from vitlab.analysis.inputs import ImageSet, LoadedModel, load_images, load_model
from vitlab.analysis.uniformity import normalised_entropy, uniform_note
from vitlab.errors import CheckpointError, ConfigError, DataError
from vitlab.evaluation.plots import prediction_caption
from vitlab.utils.progress import track

_EXPLAIN = {
    "summary": "What was analysed: the model, its weights and the images the figures below are computed on.",
    "curves": "Left: training loss per logged step and validation loss per epoch; middle: validation accuracy per "
              "epoch; right: the learning rate of every logged step (the warmup ramp, then the decay). Curves that "
              "still fall at the end mean more epochs would help.",
    "confusion": "Rows are true classes, columns predicted ones; a strong diagonal is good, bright off-diagonal cells "
                 "are the classes the model confuses.",
    "predictions": "Each image with its top prediction, 'class (p=probability), true: class' (green when right, red "
                   "when wrong), above its attention-rollout saliency on one absolute scale: where the model looked.",
}


@dataclass
class RunInputs:
    """What a report target resolves to."""

    checkpoint: Path
    run_dir: Path | None = None
    records: list[dict] = field(default_factory=list)
    default_images: str | None = None


def resolve_target(target: str | Path) -> RunInputs:
    """A run folder (best, else last checkpoint; its log and data source) or a checkpoint file."""
    path = Path(target).expanduser()
    if path.is_dir():
        ckpts = [path / "checkpoints" / f"{n}.safetensors" for n in ("best", "last")]
        found = next((c for c in ckpts if c.is_file()), None)
        if found is None:
            raise CheckpointError(f"{path}: no checkpoints/best.safetensors or last.safetensors (not a run folder)")
        run_dir = path
    elif path.is_file():
        found = path
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    else:
        raise CheckpointError(f"{path}: run folder or checkpoint not found")
    inputs = RunInputs(found, run_dir)
    if run_dir is not None:
        inputs.records = read_metrics(run_dir / "metrics.jsonl")
        inputs.default_images = _data_source(run_dir / "config.yaml")
    return inputs


def read_metrics(path: Path) -> list[dict]:
    """Records of metrics.jsonl; a torn last line (a killed run) is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _data_source(config: Path) -> str | None:
    import yaml

    if not config.is_file():
        return None
    try:
        data = (yaml.safe_load(config.read_text()) or {}).get("data", {}) or {}
    except yaml.YAMLError:
        return None
    return data.get("val") or data.get("train")


def build_report(
    target: str | Path,
    images: Sequence[str] | None = None,
    limit: int = 16,
    options: AnalysisOptions | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    quiet: bool = False,
) -> str:
    """The report page (HTML string) for a run folder or checkpoint; a progress bar on a terminal
    stderr while the attention pass runs (not with ``quiet``)."""
    o = options or AnalysisOptions()
    run = resolve_target(target)
    loaded = load_model(str(run.checkpoint), device=device)
    if loaded.is_detr:
        raise ConfigError(f"{run.checkpoint}: the report covers ViT classifiers; for a DETR use "
                          "`vitlab analyze all --model CHECKPOINT --images ...` (encoder / decoder attention)")
    notes: list[str] = []
    specs = list(images) if images else ([run.default_images] if run.default_images else [])
    imgs: ImageSet | None = None
    if specs:
        try:
            imgs = load_images(specs, loaded.preprocess, limit)
        except DataError as err:
            if images:
                raise
            notes.append(f"the run's data source could not be read ({err}); pass --images")
    else:
        notes.append("no images given (--images): only the weight analyses are shown")
    sections = [_summary(loaded, run, imgs, notes)]
    if run.records:
        sections.append(_curves(run.records))
    figs: list[Figure] = []
    if imgs is not None:
        batches = track(imgs.batches(batch_size), "attention", total=math.ceil(len(imgs) / batch_size), unit="batch",
                        quiet=quiet)
        stats = collect_attention(loaded.model, batches, o, device)
        sections += _outcome(loaded, stats, imgs)
        figs += image_figures(ANALYSES, stats, imgs.display, imgs.names)
    wfigs, wnotes = weight_figures(ANALYSES, loaded.model)
    figs += wfigs
    for kind in ANALYSES:
        mine = [f for f in figs if f.kind == kind]
        said = [n for n in wnotes if n.startswith(kind + ":")] + [f.note for f in mine if f.note]
        if mine or said:
            sections.append(Section(kind, TITLES[kind], EXPLAIN[kind], [(f.title, f.png) for f in mine],
                                    notes=list(dict.fromkeys(said))))
    if imgs is not None:
        sections.append(_outliers(loaded, imgs, o, batch_size, device))
    subtitle = f"{loaded.name} - {run.run_dir or run.checkpoint}"
    return render(f"vitlab report: {loaded.name}", subtitle, sections)


def _outliers(loaded: LoadedModel, imgs: ImageSet, o: AnalysisOptions, batch_size: int,
              device: torch.device | str) -> Section:
    """High-norm outlier tokens per block (Darcet et al. 2024): figures and a one-line verdict."""
    from vitlab.analysis import outlier_figures as of

    figs, summary = of.outlier_section(loaded.model, loaded.name, imgs, o.outlier_factor, o.show, batch_size, device)
    return Section(of.KIND, of.TITLE, of.EXPLAIN, [(f.title, f.png) for f in figs], notes=[of.outlier_note(summary)])


def _summary(loaded: LoadedModel, run: RunInputs, imgs: ImageSet | None, notes: list[str]) -> Section:
    model = loaded.model
    rows = [("checkpoint", str(run.checkpoint)), ("model", str(getattr(model, "model_name", None) or loaded.name)),
            ("parameters", f"{sum(p.numel() for p in model.parameters()):,}"),
            ("classes", f"{len(loaded.class_names)}: {', '.join(loaded.class_names[:12])}"
                        + (" ..." if len(loaded.class_names) > 12 else "")),
            ("input", f"{loaded.preprocess.img_size[0]}x{loaded.preprocess.img_size[1]}, "
                      f"{loaded.preprocess.in_chans} channel(s)"),
            ("images analysed", str(len(imgs)) if imgs is not None else "none")]
    rows += [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in loaded.info.items()]
    return Section("summary", "Summary", _EXPLAIN["summary"], html=table(rows), notes=notes)


def _curves(records: list[dict]) -> Section:
    png = _png(lambda f: plots.save_curves(records, f))
    return Section("curves", "Training curves", _EXPLAIN["curves"], [("training curves", png)])


def _outcome(loaded: LoadedModel, stats: AttentionStats, imgs: ImageSet) -> list[Section]:
    """Confusion matrix (labelled images only) and predictions with rollout overlays."""
    from vitlab.evaluation.plots import save_confusion_png

    out = []
    probs = stats.logits.softmax(dim=1)
    conf, pred = probs.max(dim=1)
    classes = loaded.class_names or [str(i) for i in range(probs.shape[1])]
    labels = imgs.labels(classes)
    if labels is not None:
        n = len(classes)
        cm = torch.bincount(torch.tensor(labels) * n + pred, minlength=n * n).reshape(n, n)
        acc = 100.0 * float((pred == torch.tensor(labels)).float().mean())
        png = _png(lambda f: save_confusion_png(cm, classes, f))
        out.append(Section("confusion", "Confusion matrix", _EXPLAIN["confusion"], [("confusion matrix", png)],
                           notes=[f"top-1 on these {len(labels)} images: {acc:.1f}%"]))
    k = min(len(imgs), 16)
    titles, colours = [], []
    for i in range(k):
        name = classes[int(pred[i])] if int(pred[i]) < len(classes) else str(int(pred[i]))
        truth = imgs.truths[i]
        titles.append(prediction_caption(name, float(conf[i]), truth))
        colours.append("black" if truth is None else ("green" if truth == name else "red"))
    heats = stats.saliency[:k]
    scale = plots.shared_scale(heats, uniform_note(normalised_entropy(heats), "saliency maps"))
    png = _png(lambda f: plots.save_overlay_grid(imgs.display[:k], heats, titles, f, colours, scale=scale))
    out.append(Section("predictions", "Predictions with attention rollout", _EXPLAIN["predictions"],
                       [("predictions", png)], notes=[scale.note] if scale.note else []))
    return out
