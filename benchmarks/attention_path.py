"""Which attention path a bf16 training step on the CPU should take: fused kernel or explicit matmuls.

Times forward + backward of the CIFAR and MNIST recipes' ViTs (batch 64) four ways, fp32 / bf16
autocast x fused / explicit attention, interleaved over rounds, and prints each median step time
and its speed against fp32 with the fused kernel (what ``vitlab.layers.attention`` does by default
in fp32). The rule in ``_fused_backward_is_slow`` (bf16 CPU training steps take the explicit
path) rests on these figures; rerun it on a new host by hand:

    .venv/bin/python benchmarks/attention_path.py [--rounds 7] [--batch 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import vitlab.layers.attention as attention
import vitlab.models  # noqa: F401  (registers the presets)
from vitlab.registry import build_model

_ROWS = [(False, False), (False, True), (True, False), (True, True)]  # (bf16, explicit)


def recipe_models() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """The CIFAR and MNIST recipes' models (configs/cifar10.yaml, configs/mnist.yaml), 10 classes."""
    cifar = build_model("vit_pico_patch4_32", stem="conv", stem_args={"channels": [48, 96], "extra": 1}, embed_dim=96,
                        depth=4, num_heads=3, mlp_dim=192, class_token=False, global_pool="avg", num_classes=10)
    mnist = build_model("vit_nano_convstem_patch4_28", drop_path_rate=0.05, stem_args={"channels": [48, 96], "extra": 1},
                        depth=3, class_token=False, global_pool="avg", num_classes=10)
    return [("cifar10 recipe", cifar, (3, 32, 32)), ("mnist recipe", mnist, (1, 28, 28))]


def step_seconds(model: nn.Module, x: torch.Tensor, bf16: bool, explicit: bool) -> float:
    """One forward + backward with the path forced; x: (B, C, H, W)."""
    rule = attention._fused_backward_is_slow
    attention._fused_backward_is_slow = lambda _x, _training: explicit
    try:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        out.float().mean().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t
    finally:
        attention._fused_backward_is_slow = rule


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    for name, model, shape in recipe_models():
        model.train()
        x = torch.randn(args.batch, *shape)
        for row in _ROWS:  # warm-up: kernel selection and oneDNN packing
            step_seconds(model, x, *row), step_seconds(model, x, *row)
        times: dict[tuple[bool, bool], list[float]] = {row: [] for row in _ROWS}
        for _ in range(args.rounds):
            for row in _ROWS:
                times[row].append(step_seconds(model, x, *row))
        base = statistics.median(times[(False, False)])
        for bf16, explicit in _ROWS:
            med = statistics.median(times[(bf16, explicit)])
            print(f"{name}: {'bf16' if bf16 else 'fp32'} {'explicit' if explicit else 'fused'}: "
                  f"{med * 1000:.1f} ms a step, {base / med:.2f}x fp32 fused")


if __name__ == "__main__":
    main()
