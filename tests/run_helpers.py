"""Reading run folders and interrupting training subprocesses, for the resume tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from vitlab.weights.vitlab_format import read_tensors


def records(run: Path, kind: str) -> list[dict]:
    """The metrics.jsonl records of one kind (a torn last line is ignored)."""
    out = []
    path = run / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("kind") == kind:
            out.append(rec)
    return out


def losses(run: Path) -> list[tuple[int, float]]:
    """(step, loss) of every train record."""
    return [(r["step"], r["loss"]) for r in records(run, "train")]


def last_weights_equal(a: Path, b: Path) -> bool:
    """Bitwise equality of two runs' last.safetensors."""
    wa, wb = read_tensors(a / "checkpoints" / "last.safetensors"), read_tensors(b / "checkpoints" / "last.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def signal_at(args: list[str], run: Path, at_step: int, sig: int) -> subprocess.Popen:
    """Run ``python -m vitlab ARGS`` and send ``sig`` once step ``at_step`` is logged in ``run``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same intra-op threads as the (pytest) parent
    proc = subprocess.Popen([sys.executable, "-m", "vitlab", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(s >= at_step for s, _ in losses(run)):
            proc.send_signal(sig)
            break
        time.sleep(0.001)
    proc.wait(timeout=240)
    return proc


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add seeded noise (std 0.05) to every weight so logits carry signal (a zero head would hide a bad map)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()
