"""Exact resume where users hit it: the default cadence (epoch-end checkpoints) with drop-path,
mid-epoch resumes reporting the whole epoch, changed fields applied, the logged lr and gradient
norms, stale temp files. Each test here failed on the engine before issue 14.

The runs use the main job's own recipe (configs/mnist.yaml: conv-stem ViT with drop-path 0.05,
affine augmentation, warmup + cosine), shortened to 2 epochs of 6 steps, plus dropout and Mixup.
"""

from __future__ import annotations

import math
import signal
from pathlib import Path

import pytest

from run_helpers import last_weights_equal as _weights_equal
from run_helpers import losses as _losses
from run_helpers import records as _records
from run_helpers import signal_at
from vitlab.cli.main import main
from vitlab.config import resolve_config

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "mnist.yaml"
_CFG = resolve_config(RECIPE)
BATCH, LR, MIN_LR = _CFG.data.batch_size, _CFG.optim.lr, _CFG.optim.min_lr  # the recipe's own values
ARGS = ["--config", str(RECIPE), "--epochs", "2", "--set", "max_steps_per_epoch=6", "--set", "log_every=1",
        "--set", "max_eval_images=300", "--set", "tensorboard=false", "--device", "cpu", "--no-progress",
        "--set", "model_args.drop_rate=0.1", "--set", "mixup.mixup_alpha=0.2"]


def _kill_at(run: Path, at_step: int, *extra: str) -> None:
    """Start a training subprocess and SIGKILL it once step ``at_step`` is logged."""
    proc = signal_at(["train", *ARGS, *extra, "--out", str(run)], run, at_step, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    assert max(s for s, _ in _losses(run)) < 12, "the run finished before it was killed"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", *ARGS, "--out", str(run)]) == 0
    return run


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_in_epoch_two_resumes_exactly_from_the_epoch_end(reference: Path, tmp_path: Path, workers: int) -> None:
    """The default cadence: the only checkpoint is the end of epoch 1; drop-path and dropout are on."""
    run = tmp_path / "run"
    _kill_at(run, 7, "--workers", str(workers))
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*.state.pt")) == ["step-00000006.state.pt"]
    assert main(["train", "--resume", "auto", *ARGS, "--workers", str(workers), "--out", str(run)]) == 0
    assert _losses(run) == _losses(reference)  # steps 7-12 included, bitwise
    assert _weights_equal(run, reference)


def test_mid_epoch_resume_reports_the_whole_epoch(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _kill_at(run, 3, "--set", "checkpoint.every_steps=2")
    assert main(["train", "--resume", "auto", *ARGS, "--set", "checkpoint.every_steps=2", "--out", str(run)]) == 0
    assert _losses(run) == _losses(reference)
    keys = ("train_loss", "train_top1", "steps", "images", "skipped")
    got = [{k: r[k] for k in keys} for r in _records(run, "epoch")]
    assert got == [{k: r[k] for k in keys} for r in _records(reference, "epoch")]
    assert got[0]["steps"] == 6 and got[0]["images"] == 6 * BATCH


def test_logged_lr_is_the_rate_the_step_used(reference: Path) -> None:
    """Warmup over epoch 1 (6 steps): step k (1-based) trains at lr * k / 6 (vitlab.engine.optim.warmup_cosine)."""
    lrs = {r["step"]: r["lr"] for r in _records(reference, "train")}
    for k in range(1, 7):
        assert lrs[k] == pytest.approx(LR * k / 6, rel=1e-9)
    # Cosine from step 7 to the last (12): step 12 trains at the rate of schedule position 11.
    progress = (11 - 6) / (12 - 6)
    assert lrs[12] == pytest.approx(MIN_LR + (LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi * progress)), rel=1e-9)


def test_raw_and_clipped_gradient_norms_are_logged(reference: Path) -> None:
    recs = _records(reference, "train")
    assert all(r["grad_norm_clipped"] == pytest.approx(min(r["grad_norm"], 1.0), rel=1e-5) for r in recs)
    assert any(r["grad_norm"] > 1.0 for r in recs)  # the recipe's clip (1.0) was active at least once


def test_allowed_change_of_lr_applies_from_the_resume_step(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Resumed with a new lr, epoch 2 trains at exactly the rates of a run started with that lr."""
    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    one_epoch = [a if a != "2" else "1" for a in ARGS]
    assert main(["train", *ARGS, "--lr", "0.001", "--out", str(fresh)]) == 0
    assert main(["train", *one_epoch, "--out", str(resumed)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(resumed), "--epochs", "2", "--lr", "0.001", "--allow-change", "epochs",
                 "--allow-change", "optim.lr", "--no-progress"]) == 0
    want = {r["step"]: r["lr"] for r in _records(fresh, "train") if r["step"] > 6}
    got = {r["step"]: r["lr"] for r in _records(resumed, "train") if r["step"] > 6}
    assert got == pytest.approx(want, rel=1e-12) and len(got) == 6
    out = capsys.readouterr().out
    assert f"optim.lr {LR} -> 0.001" in out and "epochs 1 -> 2" in out  # says what applies
    assert "lr: 0.001" in (resumed / "config.yaml").read_text()


def test_stale_temp_files_are_removed_at_start_up(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    stale = [run / "checkpoints" / ".step-00000012.safetensors.k3j4.tmp", run / ".metrics.jsonl.x1.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "3", "--allow-change", "epochs", "--no-progress"]) == 0
    assert not any(p.exists() for p in stale)
    assert "removed 2 temporary file(s) left by an interrupted save" in capsys.readouterr().out


def test_mid_epoch_resume_refuses_a_changed_batch_size(reference: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """Batches already consumed are counted in global batches: another batch size mid-epoch is refused."""
    run = tmp_path / "run"
    _kill_at(run, 3, "--set", "checkpoint.every_steps=2")
    code = main(["train", "--resume", "auto", *ARGS, "--set", "checkpoint.every_steps=2", "--batch-size", str(BATCH // 2),
                 "--allow-change", "data.batch_size", "--out", str(run)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"data.batch_size x processes {BATCH} -> {BATCH // 2}" in err and "mid-epoch" in err
