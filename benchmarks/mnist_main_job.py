"""The main job's benchmark: wall time and test accuracy of `make demo`'s training, next to 3-NN.

Runs the same command the README's demo runs (``vitlab train --config configs/mnist.yaml``) in a
subprocess, times it end to end (process start to exit, evaluation included). The protocol: train
on the 4,500 digits left after the seeded, stratified 500-digit validation carve-out of the 5k
bundled subset, choose the checkpoint on those 500, score it once on the 10,000 test digits. A
3-nearest-neighbour classifier on the same training digits is the baseline. Both go into
docs/mnist.md. Run by hand on a quiet machine:

    .venv/bin/python benchmarks/mnist_main_job.py [--config configs/mnist.yaml] [--out runs/bench_mnist]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from vitlab.utils.precision import cpu_facts

ROOT = Path(__file__).resolve().parents[1]


def knn_accuracy(k: int = 3) -> float:
    """k-NN (Euclidean on raw pixels, majority vote, ties to the nearest) top-1 in percent, trained
    on the recipe's own 4,500 training digits and scored on the 10k test set."""
    from vitlab.data.mnist import load_mnist_5k, load_mnist_test
    from vitlab.data.splits import stratified_split

    xtr, ytr = load_mnist_5k()
    keep, _ = stratified_split(ytr.tolist(), 0.1, 0)  # the recipe's data.val_fraction / data.split_seed
    xtr, ytr = xtr[keep], ytr[keep]
    xte, yte = load_mnist_test()
    xtr = xtr.flatten(1).float()
    xte = xte.flatten(1).float()
    correct = 0
    for start in range(0, len(xte), 1000):
        d = torch.cdist(xte[start:start + 1000], xtr)  # (1000, 4500)
        idx = d.topk(k, largest=False).indices  # nearest first
        votes = ytr[idx]  # (1000, k)
        counts = torch.nn.functional.one_hot(votes, 10).sum(1).float()
        counts += 0.1 * torch.nn.functional.one_hot(votes[:, 0], 10)  # tie-break: the nearest neighbour
        correct += int((counts.argmax(1) == yte[start:start + 1000]).sum())
    return 100.0 * correct / len(xte)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/mnist.yaml")
    ap.add_argument("--out", default="runs/bench_mnist")
    ap.add_argument("--doc", default="docs/mnist.md")
    args = ap.parse_args()
    vitlab_exe = Path(sys.executable).parent / "vitlab"
    cmd = [str(vitlab_exe), "train", "--config", args.config, "--out", args.out, "--overwrite", "--no-progress"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"training failed ({res.returncode}): {res.stderr.strip()}")
    records = [json.loads(l) for l in (ROOT / args.out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    test = next(r for r in records if r["kind"] == "test")
    best = next(r for r in epochs if r["epoch"] == test["epoch"])  # the epoch whose checkpoint was scored
    metric = "ema_val_top1" if "ema_val_top1" in best else "val_top1"
    knn = knn_accuracy(3)
    cpu = cpu_facts()
    chosen = [line.strip() for line in (res.stdout + res.stderr).splitlines()
              if line.startswith("precision auto ->")]
    lines = [
        "# MNIST main job: measured",
        "",
        f"Command: `{' '.join(['vitlab', *cmd[1:]])}` (what `make demo` runs), timed from process start to exit,",
        "every evaluation included. Protocol: train on 4,500 of the 5,000 bundled digits; validate on the",
        "other 500 (a seeded, stratified 10% of each class: data.val_fraction 0.1, data.split_seed 0); the",
        "checkpoint with the best validation top-1 (of the EMA weights: checkpoint.best_metric) is scored",
        "once on the 10,000 MNIST test digits, which choose nothing. No image is in two of the three sets.",
        "",
        f"Machine: {cpu['cpu']} ({', '.join(cpu['flags']) or 'no bf16 flags'}), {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
        *([f"The run's precision: `{chosen[0]}`.", ""] if chosen else []),
        "| model | test top-1 | test top-5 | chosen at (on val) | wall (train + eval) |",
        "|---|---|---|---|---|",
        f"| vitlab recipe `{args.config}` | **{test['test_top1']:.2f}%** | {test['test_top5']:.2f}% | epoch "
        f"{best['epoch'] + 1} ({metric} {best[metric]:.2f}%) | {wall:.0f} s |",
        f"| 3-nearest-neighbour on raw pixels (same 4,500 training digits) | {knn:.2f}% | - | - | - |",
        "",
        "Validation top-1 (500 digits) after each epoch" + (f", val and test under the recipe's `tta: {test['tta']}`:"
                                                            if test.get("tta", "none") != "none" else ":"),
        "",
    ]
    # the raw weights' columns only where they were validated (the recipe's ema.validate_raw: false skips them)
    heads = {"val_top1": "val top-1", "val_loss": "val loss", "ema_val_top1": "EMA val top-1", "ema_val_loss": "EMA val loss"}
    keys = [k for k in heads if any(k in r for r in epochs)]
    lines += ["| epoch | train loss | " + " | ".join(heads[k] for k in keys) + " | epoch time |",
              "|---|---|" + "---|" * len(keys) + "---|"]
    for r in epochs:
        cells = [(f"{r[k]:.4f}" if k.endswith("loss") else f"{r[k]:.2f}%") if k in r else "" for k in keys]
        lines.append(f"| {r['epoch'] + 1} | {r['train_loss']:.4f} | " + " | ".join(cells) + f" | {r['seconds']:.1f} s |")
    curve = ROOT / "docs" / "figures" / "mnist_accuracy.png"  # the run's own plot (train / val top-1 per epoch)
    shutil.copyfile(ROOT / args.out / "accuracy.png", curve)
    lines += ["", f"![train and val top-1 per epoch](figures/{curve.name})"]
    lines += ["", "The recipe (resolved config):", "", "```yaml", (ROOT / args.out / "config.yaml").read_text().strip(), "```", ""]
    notes = ROOT / "benchmarks" / "mnist_notes.md"
    if notes.exists():  # how the recipe was chosen: hand-written, kept beside the script
        lines += [notes.read_text().strip(), ""]
    (ROOT / args.doc).write_text("\n".join(lines))
    print(f"test top-1 {test['test_top1']:.2f}% (chosen on val at epoch {best['epoch'] + 1}) in {wall:.0f}s wall; "
          f"3-NN {knn:.2f}%; wrote {args.doc}")


if __name__ == "__main__":
    main()
