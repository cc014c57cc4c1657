"""benchmarks/runtimes_trained.py end to end on a tiny trained checkpoint (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from vitlab.api import load_checkpoint
from vitlab.cli.main import main

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "runtimes_trained.py"


def test_scores_a_trained_checkpoint_on_a_held_out_folder(tmp_path, digit_folder):
    run = tmp_path / "run"
    assert main(["train", "--config", "mnist", "--smoke", "--data", str(digit_folder), "--test", "none",
                 "--out", str(run), "--no-progress", "--set", "tensorboard=false", "-b", "8"]) == 0
    ckpt = run / "checkpoints" / "last.safetensors"
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, str(SCRIPT), "--checkpoint", str(ckpt), "--data", str(digit_folder / "val"),
                          "--calibration-data", str(digit_folder / "train"), "--runtimes", "eager:bf16",
                          "--batch", "4", "--rounds", "1", "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert result["images"] == 18 and set(rows) == {"eager:fp32", "eager:bf16"}
    assert rows["eager:fp32"]["agreement"] == 100.0 and rows["eager:fp32"]["change"] == 0.0
    assert 0.0 <= rows["eager:bf16"]["agreement"] <= 100.0 and rows["eager:bf16"]["max_abs_diff"] > 0  # bf16 is not fp32
    # the reference accuracy is the checkpoint's own, recomputed here without the script
    sys.path.insert(0, str(SCRIPT.parent))
    from runtimes_trained import load_folder

    model = load_checkpoint(ckpt).model.eval()
    images, labels = load_folder(digit_folder / "val", model, load_checkpoint(ckpt).class_names, None)
    with torch.no_grad():
        top1 = 100 * (model(images).argmax(1) == labels).float().mean().item()
    assert abs(rows["eager:fp32"]["top1"] - top1) < 1e-9
    assert "| eager:bf16 |" in res.stdout
