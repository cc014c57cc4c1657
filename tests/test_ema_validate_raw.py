"""``ema.validate_raw: false``: only the EMA weights are validated (the MNIST recipe's saving), the
checkpoint is still chosen on them, and settings that would then have nothing to choose on are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from vitlab.cli.main import main

TINY = ["--data", "mnist", "--model", "vit_pico_patch7_28", "--set", "model_args.depth=1", "--set", "model_args.embed_dim=32",
        "--set", "model_args.num_heads=2", "--set", "model_args.mlp_dim=64", "--device", "cpu", "--no-progress",
        "--set", "tensorboard=false", "--batch-size", "32", "--epochs", "2", "--set", "max_steps_per_epoch=4",
        "--set", "max_eval_images=64", "--test", "none"]
EMA = ["--set", "ema.decay=0.9", "--set", "checkpoint.best_metric=ema_val_top1"]


def _epochs(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]


def test_only_the_ema_is_validated_and_it_chooses_the_same_checkpoint(tmp_path: Path) -> None:
    both, ema_only = tmp_path / "both", tmp_path / "ema_only"
    assert main(["train", *TINY, *EMA, "--out", str(both)]) == 0
    assert main(["train", *TINY, *EMA, "--set", "ema.validate_raw=false", "--out", str(ema_only)]) == 0
    with_raw, without = _epochs(both), _epochs(ema_only)
    assert all("val_top1" in r and "ema_val_top1" in r for r in with_raw)  # negative control: the default has both
    assert all("val_top1" not in r and "val_loss" not in r for r in without)
    assert all((ema_only / f).is_file() for f in ("loss.png", "accuracy.png", "lr.png"))  # curves of the EMA's figures
    for a, b in zip(with_raw, without):  # the same training and the same EMA figures, without the raw pass
        assert a["train_loss"] == b["train_loss"]
        assert a["ema_val_top1"] == b["ema_val_top1"] and a["ema_val_loss"] == b["ema_val_loss"]
    best_a = load_file(both / "checkpoints" / "best.safetensors")
    best_b = load_file(ema_only / "checkpoints" / "best.safetensors")
    assert best_a.keys() == best_b.keys() and all((best_a[k] == best_b[k]).all() for k in best_a)


@pytest.mark.parametrize("change", [["--set", "ema.decay=0.9"], []])  # choosing on val_top1; no EMA at all
def test_without_an_ema_metric_to_choose_on_it_is_refused(tmp_path: Path, change: list[str],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *TINY, "--set", "ema.validate_raw=false", *change, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ema.validate_raw=false" in err[0] and "checkpoint.best_metric" in err[0]
