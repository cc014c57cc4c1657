"""Shared by the DETR benchmarks: run the CLI in a subprocess and score a checkpoint with COCO mAP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def vitlab(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    res = subprocess.run([sys.executable, "-m", "vitlab", *args], cwd=ROOT, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"vitlab {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    return res


def evaluate(ckpt: Path, data: str, split: str) -> dict:
    return json.loads(vitlab("detect", "eval", str(ckpt), "--data", data, "--split", split, "--json",
                             "--device", "cpu", "--batch-size", "10").stdout)
