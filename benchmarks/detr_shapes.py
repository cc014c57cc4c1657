"""Benchmark: DETR on synthetic shapes: train the CPU demo recipe, then report COCO mAP on the
held-out synthetic val images (and on training images, for comparison).

Runs the CLI in subprocesses with ``--threads`` intra-op threads (default 2: the timed figure of
docs/detr.md is taken on a quiet 2-core machine; use 1 on a shared one), times the training (the
wall clock of ``vitlab detect train``, its periodic validation included), scores the LAST
checkpoint (nothing is chosen on the figures reported) and prints a JSON summary and the markdown
rows for docs/detr.md. Run by hand:

    .venv/bin/python benchmarks/detr_shapes.py [--config configs/detr_shapes.yaml] [--threads 2]
        [--out runs/bench_detr_shapes] [--epochs N] [--skip-train]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from _detr_common import ROOT, evaluate, vitlab  # noqa: E402  (benchmarks/ is on sys.path)

KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")


def _epoch_records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"kind": "epoch"' in line]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/detr_shapes.yaml")
    ap.add_argument("--eval-data", default="shapes:64:64", help="Images scored on each split (train / val streams).")
    ap.add_argument("--out", default="runs/bench_detr_shapes")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the training and evaluation.")
    ap.add_argument("--skip-train", action="store_true", help="Only evaluate an existing run folder.")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    out = ROOT / args.out
    wall = None
    if not args.skip_train:
        extra = ["--epochs", str(args.epochs)] if args.epochs else []
        t0 = time.perf_counter()
        vitlab("detect", "train", "--config", args.config, "--out", str(out), "--overwrite", "--no-progress", *extra)
        wall = time.perf_counter() - t0
    ckpt = out / "checkpoints" / "last.safetensors"
    train_stats = evaluate(ckpt, args.eval_data, "train")
    val_stats = evaluate(ckpt, args.eval_data, "val")
    epochs = _epoch_records(out)
    curve = {r["epoch"] + 1: round(r["val_AP"], 1) for r in epochs if "val_AP" in r}
    summary = {"config": args.config, "threads": args.threads, "cpus": os.cpu_count(), "machine": platform.processor()
               or platform.machine(), "load_average_after": os.getloadavg(), "epochs": len(epochs),
               "steps": epochs[-1].get("step") if epochs else None, "train_seconds": wall,
               "final_train_loss": epochs[-1]["train_loss"] if epochs else None, "val_AP_by_epoch": curve,
               "train_images": {k: train_stats[k] for k in KEYS}, "val_images": {k: val_stats[k] for k in KEYS}}
    print(json.dumps(summary, indent=2))
    f = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731  (COCO figures are percent; None: no such objects)
    v, t = val_stats, train_stats
    print("| epochs | steps | train time | val AP | val AP50 | val AP75 | val AR100 | AP on train images | AP50 |")
    print(f"| {len(epochs)} | {summary['steps']} | {f(wall) if wall else 'n/a'} s | **{f(v['AP'])}** | {f(v['AP50'])} | "
          f"{f(v['AP75'])} | {f(v['AR100'])} | {f(t['AP'])} | {f(t['AP50'])} |")
    print("val AP by epoch: " + " / ".join(f"{e}: {a}" for e, a in curve.items()))


if __name__ == "__main__":
    main()
