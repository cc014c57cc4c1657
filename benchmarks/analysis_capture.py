"""Cost of attention capture: plain forward (fused SDPA) vs forward with every layer's maps captured.

Run by hand:  .venv/bin/python benchmarks/analysis_capture.py [--model vit_small_patch16_224] [--batch 8]
Writes docs/analysis_capture.md. Timings interleave the variants (plain, capture, plain again) in
every round and report medians, so load from other processes on a shared machine hits all alike.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from vitlab.analysis import capture_attention, collect_attention
from vitlab.registry import create_model

DOC = Path(__file__).resolve().parents[1] / "docs" / "analysis_capture.md"


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path, default=DOC)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    x = torch.randn(args.batch, model.config.in_chans, *model.config.img_size)

    def plain() -> None:
        with torch.inference_mode():
            model(x)

    def captured() -> None:
        with torch.inference_mode(), capture_attention(model) as cap:
            model(x)
        assert len(cap.softmax[0]) == 1

    def statistics_too() -> None:  # the analyze runner: capture + distance, entropy, collapse, rollout
        collect_attention(model, [x])

    for fn in (plain, captured, statistics_too):  # warm-up
        fn()
    times: dict[str, list[float]] = {"plain": [], "capture": [], "plain after capture": [], "capture + statistics": []}
    for _ in range(args.rounds):
        times["plain"].append(timed(plain))
        times["capture"].append(timed(captured))
        times["plain after capture"].append(timed(plain))
        times["capture + statistics"].append(timed(statistics_too))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["plain"]
    rows = "\n".join(f"| {k} | {1000 * v:.1f} | {v / base:.2f}x | {1000 * min(times[k]):.1f} |" for k, v in med.items())
    text = f"""# Attention capture: cost

`{args.model}`, batch {args.batch}, {'x'.join(map(str, x.shape[1:]))} input, fp32, CPU
({platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}),
{args.rounds} interleaved rounds; median and best wall time of one forward.

| variant | median ms | vs plain | best ms |
|---|---|---|---|
{rows}

* **plain**: `model(x)` with nothing captured; every layer runs fused `scaled_dot_product_attention`.
* **capture**: the same forward inside `capture_attention(model)`: every layer takes the explicit
  softmax path and a hook keeps its (B, H, T, T) maps. Target: at most 1.3x plain.
* **plain after capture**: hooks removed on exit, so the fused path (and its speed) is back.
* **capture + statistics**: what `vitlab analyze` does per batch: capture, then mean distance,
  entropy, DeepViT cross-layer and head similarity, rollout.

Measured on a machine shared with other jobs (2 cores, load from concurrent test runs), so the
absolute numbers are noisy; the interleaving keeps the ratios comparable. Reproduce with
`.venv/bin/python benchmarks/analysis_capture.py --model {args.model} --batch {args.batch}`.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
