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
from vitlab.api import create_model

DOC = Path(__file__).resolve().parents[1] / "docs" / "analysis_capture.md"


def timed(fn, cpu: dict[str, list[float]], key: str) -> float:
    """Wall time of fn(); its process CPU time (all threads) is appended to cpu[key]."""
    c, t = time.process_time(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    cpu.setdefault(key, []).append(time.process_time() - c)
    return wall


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
    cpu: dict[str, list[float]] = {}
    variants = [("plain", plain), ("capture", captured), ("plain after capture", plain),
                ("capture + statistics", statistics_too)]
    for _ in range(args.rounds):
        for key, fn in variants:
            times[key].append(timed(fn, cpu, key))
    med = {k: statistics.median(v) for k, v in times.items()}
    # Paired within each round: capture against the mean of the plain runs just before and after it.
    paired = [c / ((a + b) / 2) for a, c, b in zip(times["plain"], times["capture"], times["plain after capture"])]
    base = med["plain"]
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    rows = "\n".join(f"| {k} | {1000 * v:.1f} | {v / base:.2f}x | {1000 * min(times[k]):.1f} | "
                     f"{1000 * cpu_med[k]:.1f} | {cpu_med[k] / cpu_med['plain']:.2f}x |" for k, v in med.items())
    text = f"""# Attention capture: cost

`{args.model}`, batch {args.batch}, {'x'.join(map(str, x.shape[1:]))} input, fp32, CPU
({platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}),
{args.rounds} interleaved rounds; wall time of one forward (median, best) and the process CPU time
it used (all threads; less sensitive than wall time to other jobs on the machine).

| variant | median wall ms | vs plain | best wall ms | median CPU ms | CPU vs plain |
|---|---|---|---|---|---|
{rows}

**Capture / plain, paired per round: median {statistics.median(paired):.2f}x** (range {min(paired):.2f}x to
{max(paired):.2f}x over {len(paired)} rounds).

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
