"""Honest evaluation from the CLI: val carved and disjoint from train, the checkpoint chosen on val,
the test split scored once at the end and never used to choose anything (issue 17, section 1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vitlab.cli.main import main
from vitlab.weights.vitlab_format import read_metadata

TINY = ["--model", "vit_pico_patch7_28", "--set", "model_args.depth=1", "--set", "model_args.embed_dim=32",
        "--set", "model_args.num_heads=2", "--set", "model_args.mlp_dim=64", "--device", "cpu", "--no-progress",
        "--set", "tensorboard=false", "--batch-size", "64"]


def _records(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


def test_mnist_selects_on_val_and_reports_test_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", "mnist", *TINY, "--epochs", "3", "--set", "max_steps_per_epoch=4",
                 "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "carved from mnist's training split (500 images" in out and "training on the other 4500" in out
    records = _records(run)
    epochs = [r for r in records if r["kind"] == "epoch"]
    tests = [r for r in records if r["kind"] == "test"]
    assert len(tests) == 1 and tests[0]["images"] == 10000 and tests[0]["checkpoint"] == "best.safetensors"
    assert all("test_top1" not in r for r in epochs)  # test never appears before the end
    best = max(epochs, key=lambda r: r["val_top1"])  # chosen on val (first of ties, as the engine)
    assert read_metadata(run / "checkpoints" / "best.safetensors")["info"]["epoch"] == best["epoch"]
    assert tests[0]["epoch"] == best["epoch"]
    assert f"test top-1 {tests[0]['test_top1']:.2f}%" in out


def test_flat_folder_carves_val_and_has_no_test(digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    flat = tmp_path / "flat"
    shutil.copytree(digit_folder / "train", flat)
    run = tmp_path / "run"
    assert main(["train", "--data", str(flat), *TINY, "--batch-size", "8", "--epochs", "1", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "carved from" in out and "(3 images" in out  # 10% of each of 3 classes of 12 images, at least one each
    assert not any(r["kind"] == "test" for r in _records(run))
    saved = (run / "config.yaml").read_text()
    assert "val_fraction: 0.1" in saved and "split_seed: 0" in saved


def test_test_none_skips_the_test_split(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"  # mnist has a test split: --test none must really skip it
    assert main(["train", "--data", "mnist", "--test", "none", *TINY, "--epochs", "1", "--set", "max_steps_per_epoch=2",
                 "--out", str(run)]) == 0
    assert not any(r["kind"] == "test" for r in _records(run)) and "test top-1" not in capsys.readouterr().out
    assert "test: null" in (run / "config.yaml").read_text()


def test_test_none_skips_and_an_explicit_val_is_used_whole(digit_folder: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", "mnist", "--val", str(digit_folder / "val"), "--test", "none", *TINY,
                 "--epochs", "1", "--set", "max_steps_per_epoch=2", "--out", str(run)]) == 3  # a data error: 3 vs 10 classes
    assert "validation classes differ" in capsys.readouterr().err
    assert main(["train", "--data", str(digit_folder / "train"), "--val", str(digit_folder / "val"), "--test", "none",
                 *TINY, "--batch-size", "8", "--epochs", "1", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "carved" not in out and "validating on 18" in out
    assert not any(r["kind"] == "test" for r in _records(run))
