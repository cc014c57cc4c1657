"""Over a long run memory stays flat and no file handle leaks (35 epochs, 2 data-loader workers)."""

from __future__ import annotations

import os
from pathlib import Path

from vitlab.config import parse_assignment, resolve_config
from vitlab.trainer import train


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_memory_and_file_handles_stay_flat_over_35_epochs(digit_folder: Path, tmp_path: Path) -> None:
    sets = ["model=vit_pico_patch7_28", "model_args.depth=1", "model_args.embed_dim=32", "model_args.num_heads=2",
            "model_args.mlp_dim=64", f"data.train={digit_folder}", "data.batch_size=8", "data.workers=2", "epochs=35",
            "tensorboard=false", "device=cpu", "checkpoint.every_steps=2", "data.augment.affine_degrees=10"]
    cfg = resolve_config(None, [parse_assignment(s) for s in sets])
    samples: list[tuple[float, int]] = []

    def echo(line: str) -> None:
        if line.startswith("epoch "):
            samples.append((_rss_mb(), _open_fds()))

    train(cfg, tmp_path / "run", progress=False, echo=echo)
    assert len(samples) == 35
    warm = samples[9]  # after 10 epochs: allocator pools, worker pipes and caches are warm
    rss_growth = max(r for r, _ in samples[10:]) - warm[0]
    fds = {f for _, f in samples[10:]}
    assert rss_growth < 25, f"RSS grew {rss_growth:.1f} MB from epoch 10 to 35: {[round(r) for r, _ in samples]}"
    assert max(fds) <= warm[1], f"open file descriptors grew: {[f for _, f in samples]}"
