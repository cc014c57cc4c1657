"""The attention-collapse study (DeepViT, Zhou et al. 2021, Sec. 3 and 5), small and reproducible.

Trains the same narrow ViT at several depths with self-attention and with re-attention (one
``vitlab.trainer.train`` run each, from one recipe), then measures on held-out images, per block,
the cross-layer similarity of attention maps (the paper's Eq. 3, from
:mod:`vitlab.analysis.collapse`) and counts the "similar blocks" (similarity with an adjacent
block >= a threshold, 0.8 in the paper). The paper's claim under test: with self-attention the
similarity rises with depth, and re-attention lowers it at equal or better accuracy.

For re-attention models two sets of maps are measured: the softmax maps (``attend``, before
mixing: directly comparable with self-attention) and the mixed maps (``reattend``, the ones that
weight the values). Blocks without re-attention contribute their softmax maps to both.

Recipe (``configs/collapse_study.yaml``)::

    study: {depths: [...], variants: {name: {model_args...}}, eval_images: N, threshold: 0.8}
    train: a TrainConfig mapping (model, model_args, data, optim, epochs, ...)
    smoke: overrides of both blocks for a seconds-long check
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitlab.config import read_yaml, resolve_config
from vitlab.errors import ConfigError
from vitlab.layers.recorder import record_attention


@dataclass
class StudySettings:
    """What to train and how to measure (the ``study`` block of the recipe)."""

    depths: tuple[int, ...] = (8, 16, 24)
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "self-attention": {"attn": "mhsa"},
        "re-attention": {"attn": "reattention"},
    })
    eval_images: int = 500  # held-out images for the similarity measurement
    threshold: float = 0.8
    eval_batch: int = 100

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudySettings:
        known = {"depths", "variants", "eval_images", "threshold", "eval_batch"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown study option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        out = cls(**data)
        out.depths = tuple(int(d) for d in out.depths)
        if not out.depths or min(out.depths) < 2:
            raise ConfigError(f"study.depths must be block counts >= 2, got {out.depths}")
        if not out.variants:
            raise ConfigError("study.variants is empty")
        return out


def load_recipe(path: str | Path, smoke: bool = False) -> tuple[StudySettings, dict[str, Any]]:
    """(study settings, train mapping) from a recipe file; ``smoke`` merges its ``smoke`` block."""
    data = read_yaml(path)
    unknown = sorted(set(data) - {"study", "train", "smoke"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; expected study, train, smoke")
    study, train = dict(data.get("study") or {}), dict(data.get("train") or {})
    if smoke:
        extra = data.get("smoke") or {}
        study.update(extra.get("study") or {})
        train = _merge(train, extra.get("train") or {})
    return StudySettings.from_dict(study), train


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ----------------------------------------------------------------------------- measuring
@torch.no_grad()
def measure(model: nn.Module, images: torch.Tensor, threshold: float = 0.8, batch: int = 100) -> dict[str, Any]:
    """Cross-layer similarity of a trained model's attention on ``images`` (N, C, H, W).

    Returns ``{"softmax": {...}, "mixed": {...}, "centered": {...}}``, each with ``matrix`` (L x L,
    mean over images of M^{p,q}), ``adjacent`` (M^{p,p+1} per block p), ``similar_blocks`` (block
    indices) and ``num_similar``. ``mixed`` equals ``softmax`` for models without re-attention.
    ``centered`` is a diagnostic beyond the paper: the same cosine on softmax maps minus the
    uniform map 1/T, since near-uniform maps (e.g. at initialisation) have cosine ~1 whatever
    they attend to.
    """
    from vitlab.analysis.collapse import cross_layer_similarity

    model.eval()
    sums = {"softmax": 0.0, "mixed": 0.0, "centered": 0.0}
    with record_attention(model, [b.attn for b in model.blocks]) as rec:  # the one recorder, every block
        for start in range(0, len(images), batch):
            rec.clear()
            model(images[start:start + batch])
            # float64: peaked maps have columns of ~1e-25 whose squared norm underflows in float32.
            soft = [a.double() for a in rec.maps("softmax")]
            eff = [a.double() for a in rec.maps("effective")]  # re-attention blocks: the mixed maps
            sums["softmax"] = sums["softmax"] + cross_layer_similarity(soft).sum(0)
            sums["mixed"] = sums["mixed"] + cross_layer_similarity(eff).sum(0)
            centered = [a - 1.0 / a.shape[-1] for a in soft]
            sums["centered"] = sums["centered"] + cross_layer_similarity(centered).sum(0)
    return {kind: summarize(total / len(images), threshold) for kind, total in sums.items()}


def summarize(matrix: torch.Tensor, threshold: float) -> dict[str, Any]:
    """L x L similarity -> per-block adjacent similarity and similar blocks (as plain lists)."""
    from vitlab.analysis.collapse import neighbour_similarity, similar_blocks

    similar = similar_blocks(matrix, threshold)
    return {
        "matrix": [[round(float(v), 5) for v in row] for row in matrix],
        "adjacent": [round(float(v), 5) for v in neighbour_similarity(matrix, 1)],
        "similar_blocks": similar,
        "num_similar": len(similar),
    }


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Any, batch: int = 500) -> float:
    """Top-1 (%) of ``model`` on every item of ``dataset`` ((image, label) pairs)."""
    model.eval()
    correct = 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False)
    for x, y in loader:
        correct += int((model(x).argmax(-1) == y).sum())
    return 100.0 * correct / len(dataset)


# ----------------------------------------------------------------------------- running
def run_study(recipe: str | Path, out: str | Path, smoke: bool = False, reuse: bool = False,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every (variant, depth), measure, and write ``results.json`` and figures under ``out``.

    ``reuse`` skips training for runs that finished (all epochs logged, final weights present) and
    only re-measures them; unfinished runs are trained again from scratch.
    """
    from vitlab.data import Preprocess, build_eval_transform, open_source
    from vitlab.api import load_checkpoint
    from vitlab.engine.rundir import RunDir
    from vitlab.trainer import train

    settings, train_block = load_recipe(recipe, smoke)
    out = Path(out)
    results: dict[str, Any] = {"recipe": str(recipe), "smoke": smoke, "threshold": settings.threshold,
                               "eval_images": settings.eval_images, "runs": []}
    for depth in settings.depths:
        for name, variant in settings.variants.items():
            model_args = {**(train_block.get("model_args") or {}), "depth": depth, **variant}
            cfg = resolve_config(None, [train_block, {"model_args": model_args}])
            run_dir = out / f"{_slug(name)}-d{depth}"
            if not (reuse and _finished(RunDir(run_dir), cfg.epochs)):
                echo(f"== {name}, {depth} blocks -> {run_dir}")
                done = train(cfg, run_dir, overwrite=True, progress=False, echo=echo)
                if getattr(done, "exit_code", 0):  # stopped by a signal after checkpointing: stop the study
                    results["stopped"] = done.exit_code
                    return results
            fresh = _fresh_model(cfg, model_args)  # same seed and init as the run started from
            ckpt = load_checkpoint(RunDir(run_dir).weights("last"))
            model = ckpt.model.eval()
            transform = build_eval_transform(Preprocess.from_config(model.config))
            val = open_source(cfg.data.val or cfg.data.train, "val", transform)
            images = torch.stack([val[i][0] for i in range(min(settings.eval_images, len(val)))])
            record = {"variant": name, "depth": depth, "model_args": model_args, "run_dir": str(run_dir),
                      "val_top1": _logged_top1(RunDir(run_dir).metrics) or accuracy(model, val),
                      **measure(model, images, settings.threshold, settings.eval_batch),
                      "init": measure(fresh, images, settings.threshold, settings.eval_batch)["softmax"]}
            echo(f"   top-1 {record['val_top1']:.2f}%, similar blocks {record['softmax']['num_similar']}/{depth} "
                 f"(softmax maps), {record['mixed']['num_similar']}/{depth} (maps used), "
                 f"mean adjacent similarity {_mean(record['softmax']['adjacent']):.3f}")
            results["runs"].append(record)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(results_table(results))
    from vitlab.studies.collapse_plots import plot_study

    plot_study(results, out / "figures")
    return results


def _fresh_model(cfg: Any, model_args: dict[str, Any]) -> nn.Module:
    """The untrained model of a run (the trainer seeds with ``cfg.seed`` before building it)."""
    from vitlab.api import create_model

    torch.manual_seed(cfg.seed)
    return create_model(cfg.model, **model_args)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _finished(run: Any, epochs: int) -> bool:
    """Whether a run folder holds final weights and a log record of its last epoch."""
    if not (run.weights("last").exists() and run.metrics.exists()):
        return False
    for line in run.metrics.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("kind") == "epoch" and rec.get("epoch") == epochs - 1:
            return True
    return False


def _logged_top1(metrics: Path) -> float | None:
    """The last validation top-1 the trainer logged, if its log has one."""
    if not metrics.exists():
        return None
    found = None
    for line in metrics.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("val_top1"), (int, float)):
            found = float(rec["val_top1"])
    return found


def results_table(results: dict[str, Any]) -> str:
    """Markdown summary: one row per run."""
    lines = ["| attention | blocks | val top-1 % | similar blocks (softmax) | similar blocks (maps used) | "
             "mean adjacent sim. (softmax) | max adjacent sim. (softmax) | mean adjacent sim. (maps used) | "
             "mean adjacent sim. at init | mean adjacent sim. (softmax - uniform) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["runs"]:
        s, m = r["softmax"], r["mixed"]
        lines.append(f"| {r['variant']} | {r['depth']} | {r['val_top1']:.2f} | {s['num_similar']} | "
                     f"{m['num_similar']} | "
                     f"{_mean(s['adjacent']):.3f} | {max(s['adjacent']):.3f} | {_mean(m['adjacent']):.3f} | "
                     f"{_mean(r['init']['adjacent']) if 'init' in r else math.nan:.3f} | "
                     f"{_mean(r['centered']['adjacent']) if 'centered' in r else math.nan:.3f} |")
    return "\n".join(lines) + "\n"
