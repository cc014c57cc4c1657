"""Detection on the one engine: bitwise resume after SIGKILL, a checkpoint on SIGTERM, EMA,
torchrun with 2 processes equal to 1, and CLI choices persisted for a resumed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from detr_tiny import TINY_FLAGS
from run_helpers import last_weights_equal as _weights_equal
from run_helpers import losses as _losses
from run_helpers import records as _records
from run_helpers import signal_at
from vitlab.cli.main import main
from vitlab.weights.vitlab_format import read_tensors

BASE = ["detect", "train", "--data", "shapes:16:64", "--val", "shapes:8:64", *TINY_FLAGS, "--epochs", "4",
        "--set", "log_every=1", "--set", "tensorboard=false", "--set", "data.hflip=0.5"]


def _signal_at(run: Path, at_step: int, sig: int, *extra: str):
    return signal_at([*BASE, *extra, "--out", str(run)], run, at_step, sig)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("detr_ref") / "run"
    assert main([*BASE, "--out", str(run)]) == 0
    return run


def test_sigkill_then_resume_is_bitwise_identical(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _signal_at(run, 6, signal.SIGKILL, "--set", "checkpoint.every_steps=3")
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    assert max(s for s, _ in _losses(run)) < 16, "the run finished before it was killed"
    assert main([*BASE, "--set", "checkpoint.every_steps=3", "--resume", "auto", "--out", str(run)]) == 0
    assert _losses(run) == _losses(reference)
    assert _weights_equal(run, reference)
    keys = ("train_loss", "train_loss_ce", "train_loss_bbox", "images", "steps")
    assert [{k: r[k] for k in keys} for r in _records(run, "epoch")] == \
        [{k: r[k] for k in keys} for r in _records(reference, "epoch")]


def test_sigterm_checkpoints_exits_143_and_resumes(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _signal_at(run, 5, signal.SIGTERM)
    assert proc.returncode == 143, proc.stderr.read() if proc.stderr else ""
    stopped_at = max(s for s, _ in _losses(run))
    assert (run / "checkpoints" / f"step-{stopped_at:08d}.state.pt").is_file()  # checkpoint at the stop step
    assert main(["detect", "train", "--resume", str(run), "--no-progress"]) == 0
    assert _losses(run) == _losses(reference)
    assert _weights_equal(run, reference)


def test_ema_and_choices_persist_in_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [a if a != "4" else "1" for a in BASE]
    assert main([*args, "--val-split", "train", "--set", "ema.decay=0.9", "--set", "checkpoint.best_metric=ema_val_AP",
                 "--out", str(run)]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["val_split"] == "train" and saved["ema"]["decay"] == 0.9
    epoch = _records(run, "epoch")[0]
    assert {"val_AP", "ema_val_AP", "ema_val_loss"} <= set(epoch)
    # The resumed run keeps the saved choice without repeating the flag.
    assert main(["detect", "train", "--resume", str(run), "--epochs", "2", "--allow-change", "epochs",
                 "--no-progress"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["val_split"] == "train"
    assert len(_records(run, "epoch")) == 2


def test_two_processes_match_one_process(tmp_path: Path) -> None:
    """torchrun, 2 gloo processes x batch 2 == 1 process x batch 4 (global-batch loss normalisation)."""
    one, two = tmp_path / "one", tmp_path / "two"
    base = [a if a != "4" else "2" for a in BASE]  # 2 epochs
    base[base.index("--batch-size") + 1] = "4"
    assert main([*base, "--out", str(one)]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    half = list(base)
    half[half.index("--batch-size") + 1] = "2"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29531", "-m", "vitlab", *half, "--out", str(two)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    l1, l2 = _losses(one), _losses(two)
    assert [s for s, _ in l1] == [s for s, _ in l2] and len(l1) == 8
    assert max(abs(a - b) for (_, a), (_, b) in zip(l1, l2)) < 1e-4
    w1, w2 = (read_tensors(r / "checkpoints" / "last.safetensors") for r in (one, two))
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-4
