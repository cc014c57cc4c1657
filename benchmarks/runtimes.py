"""vitlab's inference runtimes against timm's eager fp32, in one process, interleaved (issue 18, section 2).

Speed: every round times timm eager fp32 and each vitlab runtime once, in an order rotated each
round, each call on a fresh ``torch.randn`` batch (never zeros, nothing reused); the figure
is the median of the per-round ratios timm time / runtime time, with min-max. Builds (export,
compile, quantize) happen before the rounds and are reported apart.

Numerics: on real photos (../shared/data/imagenette_224_val500, 500 Imagenette validation images
through the model's own eval transform) each runtime's logits are compared with vitlab eager
fp32: max |difference| and top-1 agreement. The model is a randomly initialised but fixed ViT
(seed 0; head re-drawn with std 0.02 so its classes differ between images), so this measures
fidelity to fp32, not accuracy; static int8 calibrates on the first 32 photos, which are then
left out of the agreement.

    .venv/bin/python benchmarks/runtimes.py --model vit_small_patch16_224 --batch 32 --rounds 7 \\
        --out runs/runtimes_vits.json

The CPU may be shared: the script prints ``os.getloadavg()`` before and after; read its
figures with that in mind.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vitlab  # noqa: E402
from vitlab.errors import VitlabError  # noqa: E402
from vitlab.runtime import load_runtime  # noqa: E402

IMAGENETTE = ROOT.parent / "shared" / "data" / "imagenette_224_val500"
DEFAULT_RUNTIMES = ("eager:fp32", "compiled:fp32", "onnxruntime:fp32", "openvino:fp32", "eager:bf16",
                    "compiled:bf16", "openvino:bf16", "onnxruntime:int8", "onnxruntime:int8-static")
CALIBRATION = 32


def fixed_model(name: str) -> torch.nn.Module:
    """vitlab's ``name`` with seed-0 weights; the zero-initialised head re-drawn (std 0.02)."""
    torch.manual_seed(0)
    model = vitlab.create_model(name).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.02)
        model.head.bias.zero_()
    return model


def photos(model: torch.nn.Module, limit: int) -> torch.Tensor:
    """Up to ``limit`` Imagenette photos (N, 3, 224, 224) through the model's own eval transform."""
    from vitlab.data import create_transform, open_image

    transform = create_transform(model)
    files = sorted((IMAGENETTE / "val").glob("*/*.JPEG"))[:limit]
    return torch.stack([transform(open_image(f)) for f in files])


def build(model: torch.nn.Module, specs: list[str], batch: int, calibration: torch.Tensor) -> dict:
    """{spec: (predictor, build seconds)}; a runtime that cannot run here is reported and left out."""
    out = {}
    for spec in specs:
        runtime, precision = spec.split(":")
        start = time.perf_counter()
        try:
            pred = load_runtime(model, runtime, precision.split("-")[0], batch_size=batch,
                                calibration=calibration if precision == "int8-static" else None)
        except VitlabError as err:
            print(f"  {spec}: left out ({err})", flush=True)
            continue
        out[spec] = (pred, time.perf_counter() - start)
        print(f"  built {pred.describe()} in {out[spec][1]:.1f} s", flush=True)
    return out


def interleaved(timm_model: torch.nn.Module, preds: dict, batch: int, rounds: int) -> dict:
    """Per spec: median / min / max of timm-time / runtime-time over ``rounds`` interleaved rounds."""
    def timed(fn, x) -> float:
        start = time.perf_counter()
        fn(x)
        return time.perf_counter() - start

    shape = (batch, *timm_model.default_cfg["input_size"])
    with torch.no_grad():
        timed(timm_model, torch.randn(shape))  # warm-up
        for pred, _ in preds.values():
            timed(pred, torch.randn(shape))
        ratios: dict[str, list[float]] = {spec: [] for spec in preds}
        timm_s: list[float] = []
        entries = [("timm", timm_model), *((spec, pred) for spec, (pred, _) in preds.items())]
        for r in range(rounds):
            # The order rotates every round: whatever runs right after a runtime pays for its
            # threads still spinning (ONNX Runtime's pool spins after each run) and its cache misses.
            order = entries[r % len(entries):] + entries[:r % len(entries)]
            took = {name: timed(fn, torch.randn(shape)) for name, fn in order}
            timm_s.append(took["timm"])
            for spec in preds:
                ratios[spec].append(took["timm"] / took[spec])
            print(f"  round {r + 1}/{rounds}: timm {batch / took['timm']:.1f} img/s", flush=True)
    table = {spec: {"median": statistics.median(v), "min": min(v), "max": max(v)} for spec, v in ratios.items()}
    return {"timm_img_s": batch / statistics.median(timm_s), "ratios": table}


def fidelity(model: torch.nn.Module, preds: dict, images: torch.Tensor) -> dict:
    """Per spec: max |logit - eager fp32| and top-1 agreement on ``images`` (calibration ones excluded)."""
    held = images[CALIBRATION:]
    with torch.no_grad():
        ref = torch.cat([model(held[i:i + 32]) for i in range(0, held.shape[0], 32)])
    out = {"images": held.shape[0], "distinct_classes": int(ref.argmax(1).unique().numel())}
    for spec, (pred, _) in preds.items():
        logits = pred(held)
        out[spec] = {"max_abs_diff": (logits - ref).abs().max().item(),
                     "top1_agreement": (logits.argmax(1) == ref.argmax(1)).float().mean().item()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runtimes", default=",".join(DEFAULT_RUNTIMES), help="runtime:precision, comma-separated")
    ap.add_argument("--photos", type=int, default=500, help="Imagenette photos for the numerics (0: skip)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import timm

    load_before = [round(v, 2) for v in os.getloadavg()]
    model = fixed_model(args.model)
    timm_model = timm.create_model(args.model, pretrained=False).eval()
    images = photos(model, args.photos) if args.photos else torch.randn(CALIBRATION, 3, 224, 224)
    print(f"{args.model}, batch {args.batch}, {torch.get_num_threads()} threads, load {load_before}", flush=True)
    preds = build(model, args.runtimes.split(","), args.batch, images[:CALIBRATION])
    speed = interleaved(timm_model, preds, args.batch, args.rounds)
    numerics = fidelity(model, preds, images) if args.photos else {}
    result = {"model": args.model, "batch": args.batch, "rounds": args.rounds, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "load_before": load_before, "load_after": [round(v, 2) for v in os.getloadavg()],
              "build_s": {s: round(b, 1) for s, (_, b) in preds.items()}, **speed, "numerics": numerics}
    report(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


def report(result: dict) -> None:
    """A markdown table: speed ratio to timm eager fp32 (median, min-max), build time, numerics."""
    num = result["numerics"]
    print(f"\n{result['model']} batch {result['batch']}: timm eager fp32 {result['timm_img_s']:.1f} img/s; "
          f"load {result['load_before']} -> {result['load_after']}")
    if num:
        print(f"numerics on {num['images']} Imagenette photos ({num['distinct_classes']} distinct eager top-1 classes)")
    print("| runtime | x timm eager fp32 (median) | min-max | build s | max abs diff | top-1 agreement |")
    print("|---|---|---|---|---|---|")
    for spec, r in result["ratios"].items():
        n = num.get(spec, {})
        diff = f"{n['max_abs_diff']:.1e}" if n else "-"
        agree = f"{100 * n['top1_agreement']:.1f}%" if n else "-"
        print(f"| {spec} | {r['median']:.2f}x | {r['min']:.2f}-{r['max']:.2f} | {result['build_s'][spec]} | "
              f"{diff} | {agree} |")


if __name__ == "__main__":
    main()
