"""Which attention path a bf16 training step on the CPU should take.

Times forward + backward of the CIFAR and MNIST recipes' ViTs (batch 64; ``--vit-s`` adds
ViT-S/16 at 224, batch 32) on four paths, interleaved over rounds: fp32 with the fused kernel
(the default in fp32), and bf16 autocast with the fused kernel, with the explicit path (separate
matmuls and softmax), and with the same operations recomputed in the backward instead of kept
(``vitlab.layers.recomputed_attention``). Prints each median step time and its speed against fp32
fused. The rules in ``Attention.attention_path`` rest on these figures; rerun it on a new host by hand:

    .venv/bin/python benchmarks/attention_path.py [--rounds 7] [--batch 64] [--vit-s]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import vitlab.layers.attention as attention
from vitlab.api import create_model
from vitlab.config import read_yaml

RECIPES = Path(__file__).resolve().parents[1] / "vitlab" / "recipes"

_ROWS = [("fp32", "fused"), ("bf16", "fused"), ("bf16", "explicit"), ("bf16", "recomputed")]


def recipe_models(vit_s: bool) -> list[tuple[str, nn.Module, tuple[int, ...], int | None]]:
    """The CIFAR and MNIST recipes' models as their configs/*.yaml build them, 10 classes; ViT-S/16
    at 224 (batch 32) with ``vit_s``. The last field is a batch that overrides --batch."""
    models: list[tuple[str, nn.Module, tuple[int, ...], int | None]] = []
    for recipe, shape in (("cifar10", (3, 32, 32)), ("mnist", (1, 28, 28))):
        cfg = read_yaml(RECIPES / f"{recipe}.yaml")
        model = create_model(cfg["model"], **{**cfg.get("model_args", {}), "num_classes": 10})
        models.append((f"{recipe} recipe", model, shape, None))
    if vit_s:
        models.append(("vit_small_patch16_224", create_model("vit_small_patch16_224"), (3, 224, 224), 32))
    return models


def step_seconds(model: nn.Module, x: torch.Tensor, precision: str, path: str) -> float:
    """One forward + backward with the attention path forced; x: (B, C, H, W)."""
    chooser = attention.Attention.attention_path
    attention.Attention.attention_path = lambda _self, _x: path  # type: ignore[method-assign]
    try:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        out.float().mean().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t
    finally:
        attention.Attention.attention_path = chooser  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--vit-s", action="store_true", help="add ViT-S/16 at 224, batch 32 (~1 min more)")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, model, shape, batch in recipe_models(args.vit_s):
        model.train()
        x = torch.randn(batch or args.batch, *shape)
        for row in _ROWS:  # warm-up: kernel selection and oneDNN packing
            step_seconds(model, x, *row), step_seconds(model, x, *row)
        times: dict[tuple[str, str], list[float]] = {row: [] for row in _ROWS}
        for _ in range(args.rounds):
            for row in _ROWS:
                times[row].append(step_seconds(model, x, *row))
        base = statistics.median(times[_ROWS[0]])
        for precision, path in _ROWS:
            med = statistics.median(times[(precision, path)])
            print(f"{name} (batch {x.shape[0]}): {precision} {path}: {med * 1000:.1f} ms a step, "
                  f"{base / med:.2f}x fp32 fused")


if __name__ == "__main__":
    main()
