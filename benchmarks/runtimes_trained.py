"""Reduced precision on a trained model and real photos: accuracy change and top-1 agreement (issue 18, section 2).

``benchmarks/runtimes.py`` measures speed, and fidelity on a randomly initialised ViT-S/16 whose
top-1 margins are tiny. This script takes a model vitlab trained (default: the CIFAR-10 recipe's
best checkpoint from ``benchmarks/cifar10_main_job.py``) and a held-out image folder it never
trained or chose on (default: the 10,000-image CIFAR-10 test split of ../shared/data), and for
each runtime reports test top-1 accuracy, its change against eager fp32, top-1 agreement with
eager fp32 and the largest logit difference. Static int8 calibrates on the first images of the
*training* split, never on the images it is scored on. Speed is the median of per-round
ratios to eager fp32 at ``--batch``, rounds interleaved, fresh random inputs each call.

    .venv/bin/python benchmarks/runtimes_trained.py \\
        --checkpoint runs/bench_cifar10/checkpoints/best.safetensors --data ../shared/data/cifar10_jpg/test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitlab.api import load_checkpoint  # noqa: E402
from vitlab.bench.stats import summarize  # noqa: E402
from vitlab.data import ImageFolderDataset, create_transform  # noqa: E402
from vitlab.errors import VitlabError  # noqa: E402
from vitlab.runtime import load_runtime  # noqa: E402

CIFAR = ROOT.parent / "shared" / "data" / "cifar10_jpg"
RUNTIMES = ("eager:bf16", "compiled:bf16", "openvino:fp32", "openvino:bf16", "onnxruntime:fp32",
            "onnxruntime:int8", "onnxruntime:int8-static")
CALIBRATION = 64


def load_folder(root: Path, model: torch.nn.Module, classes: list[str], limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, H, W) through the model's eval transform, labels (N,)) of ``root/<class>/*``."""
    ds = ImageFolderDataset(root, create_transform(model), classes=classes)
    idx = range(len(ds)) if limit is None else torch.linspace(0, len(ds) - 1, limit).long().tolist()
    items = [ds[i] for i in idx]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def predict_all(pred, images: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([pred(images[i:i + batch]) for i in range(0, len(images), batch)]).float()


def speed(preds: dict, shape: tuple[int, ...], rounds: int) -> dict:
    """Per runtime: median / min / max of (eager fp32 time / its time) over interleaved rounds whose
    order rotates (whatever runs after ONNX Runtime pays for its spinning threads); the statistics
    are the bench's own (:func:`vitlab.bench.stats.summarize`)."""
    def timed(fn) -> float:
        x = torch.randn(shape)
        start = time.perf_counter()
        fn(x)
        return time.perf_counter() - start

    names = list(preds)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for name in names:
            timed(preds[name])
        for r in range(rounds):
            for n in names[r % len(names):] + names[:r % len(names)]:
                times[n].append(timed(preds[n]))
    rows = summarize(times, items=shape[0], reference="eager:fp32")
    return {n: {"median": row["ratio_median"], "min": row["ratio_min"], "max": row["ratio_max"]} for n, row in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "runs/bench_cifar10/checkpoints/best.safetensors")
    ap.add_argument("--data", type=Path, default=CIFAR / "test", help="held-out folder ROOT/<class>/*")
    ap.add_argument("--calibration-data", type=Path, default=CIFAR / "train", help="static int8 calibrates here")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--limit", type=int, help="score only this many images (evenly spaced)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    load_before = [round(v, 2) for v in os.getloadavg()]
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.model.eval()
    images, labels = load_folder(args.data, model, ckpt.class_names, args.limit)
    calib, _ = load_folder(args.calibration_data, model, ckpt.class_names, CALIBRATION)
    preds = {"eager:fp32": load_runtime(model, "eager", "fp32", batch_size=args.batch)}
    build_s = {"eager:fp32": 0.0}
    for spec in args.runtimes.split(","):
        runtime, prec = spec.split(":")
        start = time.perf_counter()
        try:
            preds[spec] = load_runtime(model, runtime, prec.split("-")[0], batch_size=args.batch,
                                       calibration=calib if prec == "int8-static" else None)
        except VitlabError as err:
            print(f"  {spec}: left out ({err})", flush=True)
            continue
        build_s[spec] = round(time.perf_counter() - start, 1)
        print(f"  built {preds[spec].describe()} in {build_s[spec]} s", flush=True)
    ref = predict_all(preds["eager:fp32"], images, args.batch)
    ref_acc = (ref.argmax(1) == labels).float().mean().item()
    rows = {}
    for spec, pred in preds.items():
        logits = ref if spec == "eager:fp32" else predict_all(pred, images, args.batch)
        acc = (logits.argmax(1) == labels).float().mean().item()
        rows[spec] = {"top1": 100 * acc, "change": 100 * (acc - ref_acc),
                      "agreement": 100 * (logits.argmax(1) == ref.argmax(1)).float().mean().item(),
                      "max_abs_diff": (logits - ref).abs().max().item()}
    ratios = speed(preds, (args.batch, *images.shape[1:]), args.rounds)
    result = {"checkpoint": str(args.checkpoint), "data": str(args.data), "images": len(labels),
              "batch": args.batch, "rounds": args.rounds, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "load_before": load_before, "load_after": [round(v, 2) for v in os.getloadavg()],
              "build_s": build_s, "rows": rows, "speed": ratios}
    report(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


def report(result: dict) -> None:
    print(f"\n{result['checkpoint']} on {result['images']} images of {result['data']}, batch {result['batch']}, "
          f"{result['threads']} threads; load {result['load_before']} -> {result['load_after']}")
    print("| runtime | test top-1 | change vs eager fp32 (points) | top-1 agreement with eager fp32 | max abs logit diff "
          "| x eager fp32 speed (median) | min-max |")
    print("|---|---|---|---|---|---|---|")
    for spec, r in result["rows"].items():
        s = result["speed"][spec]
        print(f"| {spec} | {r['top1']:.2f}% | {r['change']:+.2f} | {r['agreement']:.2f}% | {r['max_abs_diff']:.1e} | "
              f"{s['median']:.2f}x | {s['min']:.2f}-{s['max']:.2f} |")


if __name__ == "__main__":
    main()
