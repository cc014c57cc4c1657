"""A DETR small enough for the test suite: ViT-pico backbone on 64 px synthetic shapes."""

from __future__ import annotations

import json

TINY_ARGS = dict(num_classes=2, num_queries=10, hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1, dim_feedforward=64,
                 min_size=64, max_size=64,
                 backbone_args={"img_size": 64, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2,
                                "mlp_dim": 64, "pos_embed": "sincos"})


def tiny_flags() -> list[str]:
    """`vitlab detect train` flags that build the tiny DETR on CPU."""
    flags = ["--model", "detr_vit_pico_128", "--device", "cpu", "--no-progress", "--batch-size", "4",
             "--set", "data.scales=[56,64]", "--set", "data.crop=false", "--set", "data.eval_batch_size=8",
             "--set", "optim.lr=1e-3", "--set", "optim.lr_backbone=1e-3"]
    for k, v in TINY_ARGS.items():
        if k != "num_classes":
            flags += ["--set", f"model_args.{k}={json.dumps(v)}"]
    return flags


TINY_FLAGS = tiny_flags()
