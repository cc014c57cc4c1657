"""Training throughput of CIFAR-10-sized ViT candidates on this CPU: what a 30-minute budget buys.

Times full optimizer steps (forward, backward, fused AdamW) on random 32x32 batches, median of
``--steps`` after warm-up, and prints images/s and seconds per 20,000-image epoch for each
candidate. Used to choose configs/cifar10.yaml (see docs/cifar10.md). Run on a quiet machine:

    .venv/bin/python benchmarks/cifar10_throughput.py [--batch-size 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vitlab.api import create_model

_GAP = dict(class_token=False, global_pool="avg")
_NANO = dict(embed_dim=96, depth=4, num_heads=3, mlp_dim=192)
_RECIPE = dict(stem="conv", stem_channels=(48, 96), **_NANO, **_GAP)
CANDIDATES: dict[str, dict] = {
    "recipe: conv stem (48, 96), width 96, 4 blocks": _RECIPE,
    "recipe + locality self-attention": dict(_RECIPE, attn="lsa"),
    "conv stem (48, 96) + one stride-1 3x3 conv (stem_args.extra 1)": dict(
        stem="conv", stem_args={"channels": (48, 96), "extra": 1}, **_NANO, **_GAP),
    "shifted patch tokens (P 4), width 96, 4 blocks": dict(stem="spt", **_NANO, **_GAP),
    "shifted patch tokens + locality self-attention": dict(stem="spt", attn="lsa", **_NANO, **_GAP),
    "patch-4 embedding, width 96, 4 blocks": dict(**_NANO, **_GAP),
    "conv stem (32, 64), width 96, 4 blocks": dict(stem="conv", stem_channels=(32, 64), **_NANO, **_GAP),
    "cnn stem (7x7 + 3x3, 32), width 96, 4 blocks": dict(stem="cnn", stem_width=32, **_NANO, **_GAP),
    "conv stem (32, 64), width 128, 4 blocks": dict(stem="conv", stem_channels=(32, 64), embed_dim=128, depth=4,
                                                    num_heads=4, mlp_dim=256, **_GAP),
    "conv stem (32, 64), width 128, 6 blocks": dict(stem="conv", stem_channels=(32, 64), embed_dim=128, depth=6,
                                                    num_heads=4, mlp_dim=256, **_GAP),
}


def step_rate(model_args: dict, batch_size: int, steps: int, model_name: str = "vit_pico_patch4_32",
              precision: str = "fp32") -> tuple[int, float]:
    """(parameters, images per second) of full training steps on (batch_size, 3, 32, 32) batches.

    ``precision="bf16"`` runs the forward under CPU autocast, as ``vitlab train --precision bf16``.
    """
    torch.manual_seed(0)
    model = create_model(model_name, **model_args).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    times = []
    for i in range(steps + 3):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 3:  # warm-up: allocator and kernel selection
            times.append(time.perf_counter() - t)
    return sum(p.numel() for p in model.parameters()), batch_size / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32"])
    ap.add_argument("--only", default="", help="run only the candidates whose name contains this text")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| candidate (8x8 tokens, GAP) | precision | parameters | train img/s (bs {args.batch_size}) | s / 18k epoch |")
    print("|---|---|---|---|---|")
    for name, kw in CANDIDATES.items():
        if args.only not in name:
            continue
        for precision in args.precision:
            n, rate = step_rate(kw, args.batch_size, args.steps, precision=precision)
            print(f"| {name} | {precision} | {n:,} | {rate:.0f} | {18000 / rate:.0f} |", flush=True)


if __name__ == "__main__":
    main()
