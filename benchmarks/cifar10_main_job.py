"""CIFAR-10 from scratch on the CPU: test accuracy and wall time of ``configs/cifar10.yaml``, next to k-NN.

Trains on the 20,000-image train subset of ../shared/data/cifar10_jpg and evaluates on its
10,000-image test split (the full CIFAR-10 test set), timed end to end in a subprocess (process
start to exit: loading, training and every test evaluation included). Then scores a k-nearest-
neighbour classifier on raw pixels over the same split for scale, copies the run's curves into
docs/figures/ and writes docs/cifar10.md. Run by hand on a quiet machine (nothing else on the CPU):

    .venv/bin/python benchmarks/cifar10_main_job.py [--data ../shared/data/cifar10_jpg] [--out runs/bench_cifar10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from cifar10_throughput import step_rate  # beside this script

from vitlab.config import TrainConfig, read_yaml, resolve_config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10_jpg"
TARGET_TOP1, TARGET_SECONDS = 76.0, 30 * 60  # issue 17 §3 (issue 3 asked for 70%)


def knn_accuracy(data: Path, k: int = 5) -> float:
    """k-NN (Euclidean on raw pixels, majority vote, ties to the nearest) test top-1 in percent."""
    from vitlab.data import ImageFolderDataset
    from vitlab.data.cache import cache_folder

    train = cache_folder(ImageFolderDataset(data / "train"))
    test = cache_folder(ImageFolderDataset(data / "test", classes=train.classes))
    xtr, ytr = train.images.flatten(1).float(), train.labels
    xte, yte = test.images.flatten(1).float(), test.labels
    correct = 0
    for start in range(0, len(xte), 1000):
        idx = torch.cdist(xte[start:start + 1000], xtr).topk(k, largest=False).indices  # nearest first
        votes = ytr[idx]
        counts = torch.nn.functional.one_hot(votes, len(train.classes)).sum(1).float()
        counts += 0.1 * torch.nn.functional.one_hot(votes[:, 0], len(train.classes))
        correct += int((counts.argmax(1) == yte[start:start + 1000]).sum())
    return 100.0 * correct / len(xte)


def machine_speed(cfg: TrainConfig) -> str:
    """Raw training-step speed (images/s) of the recipe's model and batch size on random batches, fp32 and bf16.

    Shared cloud CPUs vary in speed over a day (we have seen 300 to 600 images/s for the same
    steps), so the report states the speed the machine had around the timed run.
    """
    rates = {p: step_rate(cfg.model_args, cfg.data.batch_size, steps=20, model_name=cfg.model, precision=p)[1]
             for p in ("fp32", "bf16")}
    return " / ".join(f"{r:.0f}" for r in rates.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/cifar10.yaml")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", default="runs/bench_cifar10")
    ap.add_argument("--doc", default="docs/cifar10.md")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed on to vitlab train")
    args = ap.parse_args()
    if not (args.data / "train").is_dir() or not (args.data / "test").is_dir():
        sys.exit(f"{args.data}: expected train/ and test/ class folders (../shared/data/cifar10_jpg)")
    vitlab_exe = Path(sys.executable).parent / "vitlab"
    cmd = [str(vitlab_exe), "train", "--config", args.config, "--data", str(args.data), "--out", args.out,
           "--overwrite", "--no-progress", *[a for kv in args.set for a in ("--set", kv)]]
    recipe = resolve_config(ROOT / args.config)
    speed_before = machine_speed(recipe)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"training failed ({res.returncode}): {res.stderr.strip()}")
    run = ROOT / args.out
    records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    test = next(r for r in records if r["kind"] == "test")  # the checkpoint chosen on val, scored once
    best = max((r for r in epochs if "val_top1" in r), key=lambda r: r["val_top1"])
    speed_after = machine_speed(recipe)
    precision = read_yaml(run / "config.yaml")["precision"]  # what the run's `auto` chose
    knn = knn_accuracy(args.data)
    figures = ROOT / "docs" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    plots = sorted(run.glob("*.png"))
    for png in plots:
        shutil.copyfile(png, figures / f"cifar10_{png.name}")
    met = test["test_top1"] >= TARGET_TOP1 and wall <= TARGET_SECONDS
    shown = ["vitlab", *cmd[1:]]
    shown[shown.index("--data") + 1] = "../shared/data/cifar10_jpg"
    lines = [
        "# CIFAR-10 from scratch on a 2-core CPU: measured",
        "",
        f"Command: `{' '.join(shown)}`, timed from process start to exit (data decoding, training and",
        "every evaluation included). Train: 18,000 of the 20,000-image subset (2,000 per class) of",
        "`../shared/data/cifar10_jpg/train`; validation: the other 2,000 (a seeded, stratified 10% of each",
        "class), which choose the checkpoint; test: the full 10,000-image CIFAR-10 test split, scored once.",
        "No pre-training, no extra data; the model starts from random weights (seed 0).",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; raw training-step speed of this model (benchmarks/cifar10_throughput.py), "
        f"fp32 / bf16: {speed_before} images/s before the run and {speed_after} after; the run trained in "
        f"{precision} (`precision` in its config.yaml). Reproduce: `.venv/bin/python benchmarks/cifar10_main_job.py`.",
        "",
        f"Target (issue 17 §3): >= {TARGET_TOP1:.0f}% test top-1 within {TARGET_SECONDS // 60} minutes wall: "
        f"**{'met' if met else 'not met'}**.",
        "",
        "| model | test top-1 | test top-5 | chosen at (on val) | wall (train + eval) |",
        "|---|---|---|---|---|",
        f"| vitlab recipe `{args.config}` | **{test['test_top1']:.2f}%** | {test['test_top5']:.2f}% | epoch "
        f"{best['epoch'] + 1} (val {best['val_top1']:.2f}%) | {wall:.0f} s |",
        f"| 5-nearest-neighbour on raw pixels (all 20,000 train images) | {knn:.2f}% | - | - | - |",
        "",
        "Per epoch (validation top-1 where evaluated" + (f"; val and test under the recipe's `tta: {recipe.tta}`):"
                                                          if recipe.tta != "none" else "):"),
        "",
        "| epoch | train loss | train top-1 | val top-1 | lr of the last step | epoch time |",
        "|---|---|---|---|---|---|",
    ]
    for r in epochs:
        top1 = f"{r['val_top1']:.2f}%" if "val_top1" in r else ""
        lines.append(f"| {r['epoch'] + 1} | {r['train_loss']:.4f} | {r['train_top1']:.1f}% | {top1} | "
                     f"{r['lr']:.2e} | {r['seconds']:.1f} s |")
    lines += ["", "Curves (from the run folder):", ""]
    lines += [f"![{p.stem}](figures/cifar10_{p.name})" for p in plots]
    lines += ["", "The recipe (resolved config, as written into the run folder):", "", "```yaml",
              (run / "config.yaml").read_text().strip(), "```", ""]
    notes = ROOT / "benchmarks" / "cifar10_notes.md"
    if notes.exists():  # how the recipe was chosen: hand-written, kept beside the script
        lines += [notes.read_text().strip(), ""]
    (ROOT / args.doc).write_text("\n".join(lines))
    print(f"test top-1 {test['test_top1']:.2f}% in {wall:.0f}s wall (target {'met' if met else 'not met'}); "
          f"5-NN {knn:.2f}%; wrote {args.doc}")


if __name__ == "__main__":
    main()
