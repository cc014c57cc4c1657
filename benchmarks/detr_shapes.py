"""Benchmark: DETR on synthetic shapes: train the CPU demo recipe, then report COCO mAP on the
held-out synthetic val images (and on training images, for comparison).

Runs the CLI in subprocesses (single intra-op thread: the machine is shared), times the training,
and prints a JSON summary and a markdown row for docs/detr.md. Run by hand:

    .venv/bin/python benchmarks/detr_shapes.py [--config configs/detr_shapes.yaml]
        [--out runs/bench_detr_shapes] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import time

from _detr_common import ROOT, evaluate, vitlab  # noqa: E402  (benchmarks/ is on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/detr_shapes.yaml")
    ap.add_argument("--eval-data", default="shapes:64:64", help="Images scored on each split (train / val streams).")
    ap.add_argument("--out", default="runs/bench_detr_shapes")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--skip-train", action="store_true", help="Only evaluate an existing run folder.")
    args = ap.parse_args()
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
    epochs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"kind": "epoch"' in l]
    summary = {"config": args.config, "epochs": len(epochs), "train_seconds": wall,
               "final_train_loss": epochs[-1]["train_loss"] if epochs else None,
               "train_images": {k: train_stats[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")},
               "val_images": {k: val_stats[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")}}
    print(json.dumps(summary, indent=2))
    f = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    print(f"| {len(epochs)} | {f(wall) if wall else 'n/a'} s | {f(train_stats['AP'])} | {f(train_stats['AP50'])} | "
          f"{f(val_stats['AP'])} | {f(val_stats['AP50'])} |")


if __name__ == "__main__":
    main()
